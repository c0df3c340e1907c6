"""Comparing two sets of outputs: a result object that is truthy when it passed."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``actual`` against ``expected``, elementwise: passed iff ``|a - e| <= atol + rtol * |e|``."""

    passed: bool
    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    atol: float
    rtol: float
    shape_ok: bool = True
    detail: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compare_arrays(actual: Any, expected: Any, *, atol: float, rtol: float) -> Comparison:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return Comparison(
            passed=False,
            max_abs_error=float("inf"),
            max_rel_error=float("inf"),
            mean_abs_error=float("inf"),
            atol=atol,
            rtol=rtol,
            shape_ok=False,
            detail=f"shape {a.shape} != expected {e.shape}",
        )
    if a.size == 0:
        return Comparison(True, 0.0, 0.0, 0.0, atol, rtol)
    diff = np.abs(a - e)
    finite = np.isfinite(a).all() and np.isfinite(e).all()
    rel = diff / np.maximum(np.abs(e), np.finfo(np.float64).tiny)
    passed = bool(finite and np.all(diff <= atol + rtol * np.abs(e)))
    return Comparison(
        passed=passed,
        max_abs_error=float(diff.max()),
        max_rel_error=float(rel.max()),
        mean_abs_error=float(diff.mean()),
        atol=atol,
        rtol=rtol,
        detail="" if finite else "non-finite values",
    )
