"""The checks of `export_bundle`'s and `import_bundle`'s arguments that the command line's option
types make there: a value of the wrong kind is an `ArgumentError` (a `ValueError`) saying what was
expected and what was found, before anything is read or exported, instead of a TypeError from
deep inside (``max()`` of no golden batch sizes, a str of labels taken letter by letter)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from onnxedge.runtime.classifier.args import is_integer, is_several
from onnxedge.runtime.errors import ArgumentError


def check_golden_batch_sizes(sizes: Any) -> tuple[int, ...]:
    """One or more batch sizes, each an integer >= 1."""
    values = tuple(sizes) if is_several(sizes) else ()
    if not values or not all(is_integer(v) and v >= 1 for v in values):
        raise ArgumentError(
            f"golden_batch_sizes: expected one or more integers >= 1, such as (1, 2, 7), "
            f"found {sizes!r}"
        )
    return tuple(int(v) for v in values)


def check_budget(value: Any, what: str, *, optional: bool = False) -> float | None:
    """A finite number >= 0 (or None where ``optional``): NaN compared false with every size, so
    it stored whatever it was compared with."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        also = " or None" if optional else ""
        raise ArgumentError(f"{what}: expected a finite number >= 0{also}, found {value!r}")
    return float(value)


def check_names(labels: Any) -> Any:
    """``labels`` where it is not one str (which would be read letter by letter as class names)
    and is a sequence or a manifest's labels block (a mapping)."""
    if labels is None or isinstance(labels, Mapping):
        return labels
    if not is_several(labels):
        raise ArgumentError(
            f"labels: expected a sequence of class names, such as ('negative', 'positive'), "
            f"found {labels!r}"
        )
    return labels


def check_overrides(preprocessing: Any) -> dict[str, Any]:
    """The preprocessing keys to replace, as a dict (None: none)."""
    if preprocessing is None:
        return {}
    if not isinstance(preprocessing, Mapping):
        raise ArgumentError(
            f"preprocessing: expected a mapping of keys to replace, such as "
            f"{{'mean': [0.485, 0.456, 0.406]}}, found {preprocessing!r}"
        )
    return dict(preprocessing)


def check_shape(shape: Any, what: str = "input_shape") -> tuple[int, ...]:
    """C, H, W as integers (a str such as "3,64,64" was read character by character)."""
    if not is_several(shape):
        raise ArgumentError(f"{what}: expected C, H, W as three integers, found {shape!r}")
    dims = tuple(shape)
    if not all(is_integer(d) for d in dims):
        raise ArgumentError(f"{what}: expected C, H, W as three integers, found {shape!r}")
    return tuple(int(d) for d in dims)


__all__ = [
    "check_budget",
    "check_golden_batch_sizes",
    "check_names",
    "check_overrides",
    "check_shape",
]
