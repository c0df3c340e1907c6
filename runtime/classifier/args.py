"""The checks of `onnxedge.runtime.classifier.classifier.Classifier`'s arguments, made at the call
as the
command line's options make them: a bad value is an `ArgumentError` (a `ValueError`).
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

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


def check_several(items: Any, what: str) -> Any:
    """``items`` where it is an iterable of ``what``; a single path (a str, bytes or Path, which
    would be taken character by character: '/' walked as a folder) or a single PIL image is a
    TypeError that says to wrap it in a list, as is anything not iterable."""
    pil = sys.modules.get("PIL.Image")  # loaded where a PIL image can have been made
    single = isinstance(items, (str, bytes, os.PathLike)) or (
        pil is not None and isinstance(items, pil.Image)
    )
    if single or not isinstance(items, Iterable):
        shown = f" {os.fsdecode(items)!r}" if isinstance(items, (str, bytes, os.PathLike)) else ""
        advice = "; wrap it in a list" if single else ""
        raise TypeError(
            f"expected an iterable of {what}, got a single {type(items).__name__}{shown}{advice}"
            if single
            else f"expected an iterable of {what}, got {type(items).__name__}"
        )
    return items


def pixel_range(spec: Mapping[str, Any]) -> tuple[float, float]:
    """The least and the largest value the manifest's preprocessing ``spec`` makes of pixels 0
    and 255 (``scale``, then ``(x - mean) / std``), over its channels."""
    scale = float(spec.get("scale", 1.0 / 255.0))
    mean = np.asarray(spec.get("mean", [0.0]), dtype=np.float64).reshape(-1)
    std = np.asarray(spec.get("std", [1.0]), dtype=np.float64).reshape(-1)
    ends = np.concatenate([(0.0 - mean) / std, (255.0 * scale - mean) / std])
    if spec.get("resize_mode") in ("letterbox", "pad-right"):  # padded after the normalization
        ends = np.append(ends, float(spec.get("pad_value", 0.0)))
    return float(ends.min()), float(ends.max())


def out_of_range(least: float, largest: float, expected: tuple[float, float]) -> str | None:
    """Where a float batch's values (``least`` .. ``largest``) lie beyond the ``expected``
    `pixel_range` by more than its span (pixels 0..255 not scaled, or scaled twice): a line
    saying so; else None. The model would run on them and give a confident, wrong answer."""
    low, high = expected
    span = high - low
    if low - span <= least and largest <= high + span:
        return None
    return (
        f"input values from {least:.4g} to {largest:.4g}, where the bundle's preprocessing makes "
        f"pixels into [{low:.4g}, {high:.4g}]: pass images (predict_images, preprocess), or "
        "scale the arrays as its manifest says"
    )


def check_batch_size(batch_size: Any) -> int:
    return check_count(batch_size, "a batch size")  # type: ignore[return-value]


def check_max_pixels(max_pixels: Any) -> int | None:
    return check_count(max_pixels, "max_pixels", optional=True)


def is_integer(value: Any) -> bool:
    """An integer, numpy's included; not a bool (``True`` is 1 to Python, not a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_several(value: Any) -> bool:
    """An iterable that is not one str or bytes (which would be taken letter by letter)."""
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes))


_KINDS = {
    "int": ("an integer", is_integer),
    "number": ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
    "ints": (
        "a sequence of integers, such as (1, 64)",
        lambda v: is_several(v) and all(map(is_integer, v)),
    ),
    "names": (
        "a sequence of names (str), such as a list",
        lambda v: is_several(v) and all(isinstance(x, str) for x in v),
    ),
    "several": ("a sequence, such as a list", is_several),
}


def check_kinds(settings: Any, kinds: Mapping[str, str]) -> None:
    """Each of ``settings``' fields named in ``kinds`` of its kind (`_KINDS`; ``?`` after it:
    or None), else an `ArgumentError` naming the field: the checks of a settings object's
    values then compare numbers with numbers, and a str of names is not read letter by letter."""
    for name, kind in kinds.items():
        value = getattr(settings, name)
        if value is None and kind.endswith("?"):
            continue
        expected, fits = _KINDS[kind.rstrip("?")]
        if not fits(value):
            raise ArgumentError(f"{name}: expected {expected}, found {value!r}")
