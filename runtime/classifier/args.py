"""The checks of `onnxedge.runtime.classifier.classifier.Classifier`'s arguments, made at the call
as the
command line's options make them: a bad value is an `ArgumentError` (a `ValueError`).
"""

from __future__ import annotations

import numbers
from typing import Any

from onnxedge.runtime.errors import ArgumentError


def check_threshold(threshold: Any) -> float:
    """A real number in [0, 1] (NaN is not); a bool or a string is not a threshold."""
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not (0.0 <= threshold <= 1.0)
    ):
        raise ArgumentError(f"expected a threshold in [0, 1], got {threshold!r}")
    return float(threshold)


def check_count(
    value: Any, what: str, *, optional: bool = False, maximum: int | None = None
) -> int | None:
    """An integer >= 1 (and <= ``maximum``; or None where ``optional``), as the CLI's
    ``IntRange`` options."""
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < 1
        or (maximum is not None and value > maximum)
    ):
        bound = f"from 1 to {maximum}" if maximum is not None else "of at least 1"
        also = " or None" if optional else ""
        raise ArgumentError(f"expected {what} {bound}{also}, got {value!r}")
    return int(value)


def check_batch_size(batch_size: Any) -> int:
    return check_count(batch_size, "a batch size")  # type: ignore[return-value]


def check_max_pixels(max_pixels: Any) -> int | None:
    return check_count(max_pixels, "max_pixels", optional=True)
