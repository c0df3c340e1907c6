"""The parity judge: how far an engine may be from the float64 reference before the graph is
wrong rather than rounded differently.

An engine computing in float32 cannot be expected to be nearer the float64 truth than float32
arithmetic on this model gets. PyTorch's own float32 outputs, stored beside the float64 reference
in the golden data, measure that: their distance from float64 is the model's float32 rounding,
sums of large terms included (a logit of 1 made of terms of 30 carries the rounding of 30). So:

1. The rounding (`reference_rounding`): per output, the largest ``|float32 - float64|`` of
   PyTorch's default float32 run over every row of every batch the reference holds (whichever
   batches run, so a row is judged alike alone or with others), the RMS of the reference, and
   where the export measured it, the spread: the same over PyTorch's float32 runs with other
   kernels and summation orders (the golden data's ``float32_spread``).
2. The bound (`Judge`), per element:
   ``max(least, min(guard, max(factor * rounding, floor)))``.
   - ``factor * rounding``: the engine may round ``factor`` times worse than PyTorch's default
     run did (why these factors: docs/PARITY.md);
   - the floor, ``FLOOR_ULPS * eps32 * RMS``: what float32 resolves at the output's size, so a
     model that PyTorch happened to compute almost exactly is not held to less than that;
   - the guard, ``atol + rtol * max(|reference|, RMS)``: the fixed tolerance of the target, an
     upper limit on the rounding's bound (taken at the output's size where an element is small
     beside it, as its rounding is);
   - the least, ``SPREAD_FACTOR * spread`` (the one run's rounding where no spread was measured;
     never more than ``factor`` times it): no engine is held nearer float64 than that many times
     what PyTorch's own kernels disagree by, whatever the guard asks (a tolerance tighter than
     float32 gives the model would fail every float32 engine) and however lucky the one run was.
   Where the arithmetic is coarser than float32 (TF32, bf16) or the user set the tolerances, the
   factor is None and the guard alone judges. Against a float32 reference (no float64 truth,
   `spread_least`) the factor is None too, but the bound is ``max(least, guard)`` with
   ``least = SPREAD_FACTOR * spread``, the spread of the reference's own float32 runs: a
   reference that float32 moves by ``s`` cannot be matched nearer than that by another
   float32 engine.
3. A check (`BoundCheck`) says which of the three decided at the element nearest its bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from onnxedge.runtime.parity.tolerances import Tolerance

# 2.: float32 rounding at the output's size, with room for a few hundred operations.
FLOOR_ULPS = 100
# 2.: no bound is below this many times the spread (why 20: docs/PARITY.md, the matrix's largest
# healthy multiple of the spread where a bound would otherwise be tighter).
SPREAD_FACTOR = 20.0
_EPS32 = float(np.finfo(np.float32).eps)
FLOAT32, FLOOR, GUARD, SPREAD = "float32", "floor", "guard", "spread"


@dataclasses.dataclass(frozen=True)
class Rounding:
    """1.: PyTorch's float32 output against the float64 reference, over every reference row."""

    float32_error: float  # max |float32 - float64| of the stored (default) float32 run
    rms: float  # RMS of the float64 reference
    rows: int
    spread: float | None = None  # the same over the export's float32 runs with other kernels

    @property
    def scale(self) -> float:
        """How far PyTorch's float32 kernels are: the spread where measured, else the one run."""
        return max(self.float32_error, self.spread or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def reference_rounding(
    expected: Iterable[np.ndarray], float32: Iterable[np.ndarray], spread: float | None = None
) -> Rounding:
    """1. for the float64 and float32 reference arrays [N, K] of every batch, and the spread
    the export measured (None where it did not)."""
    e = np.concatenate([np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in expected])
    f = np.concatenate([np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in float32])
    if e.shape != f.shape:
        raise ValueError(f"float32 reference of shape {f.shape}, float64 one of {e.shape}")
    diff = np.abs(f - e)
    error = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    return Rounding(error, float(np.sqrt(np.mean(np.square(e)))), len(e), spread)


@dataclasses.dataclass(frozen=True)
class BoundCheck:
    """One output of one row against its bound. ``ratio``: the largest error over its element's
    bound (passes at 1 or less); ``bound`` and ``decided_by``: that element's bound and which of
    float32, floor, guard or spread set it. Truthy when it passed."""

    passed: bool
    ratio: float
    max_abs_error: float
    bound: float
    decided_by: str
    judge: Judge
    rows_outside: tuple[int, ...] = ()
    detail: str = ""

    def __bool__(self) -> bool:
        return self.passed

    @property
    def float32_bound(self) -> float | None:
        return self.judge.float32_bound

    @property
    def floor(self) -> float | None:
        return self.judge.floor

    @property
    def guard(self) -> Tolerance:
        return self.judge.guard

    def __str__(self) -> str:
        sign = "<=" if self.passed else ">"
        return f"{self.max_abs_error:.1e} {sign} {self.bound:.1e} {self.decided_by}"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**d, "judge": self.judge.to_dict(), "rows_outside": list(self.rows_outside)}


@dataclasses.dataclass(frozen=True)
class Judge:
    """2. for one output: the guard, and where the factor is set, the rounding it multiplies."""

    guard: Tolerance
    rounding: Rounding | None = None
    factor: float | None = None
    spread_least: bool = False  # the least bound without a factor (a float32 reference)

    @property
    def float32_bound(self) -> float | None:
        if self.factor is None or self.rounding is None:
            return None
        return self.factor * self.rounding.float32_error

    @property
    def least(self) -> float | None:
        """2.: the least bound, ``SPREAD_FACTOR`` (at most the factor) times the spread; without
        a factor, ``SPREAD_FACTOR`` times the measured spread where `spread_least` asks for it."""
        if self.rounding is None:
            return None
        if self.factor is not None:
            return min(self.factor, SPREAD_FACTOR) * self.rounding.scale
        if self.spread_least and self.rounding.spread:
            return SPREAD_FACTOR * self.rounding.spread
        return None

    @property
    def floor(self) -> float | None:
        if self.factor is None or self.rounding is None:
            return None
        return FLOOR_ULPS * _EPS32 * self.rounding.rms

    def bounds(self, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bound of each element and which term set it (an array of FLOAT32, FLOOR, GUARD,
        SPREAD)."""
        e = np.abs(np.asarray(expected, dtype=np.float64))
        scale = np.maximum(e, self.rounding.rms) if self.rounding is not None else e
        guard = self.guard.atol + self.guard.rtol * scale
        f32, floor, least = self.float32_bound, self.floor, self.least
        if least is None:
            return guard, np.full(e.shape, GUARD, dtype=object)
        if f32 is None or floor is None:  # no factor: the guard, raised to the least
            which = np.full(e.shape, GUARD, dtype=object)
            which[guard < least] = SPREAD
            return np.maximum(guard, least), which
        rounding = max(f32, floor)
        which = np.full(e.shape, FLOAT32 if f32 >= floor else FLOOR, dtype=object)
        which[guard < rounding] = GUARD
        bound = np.minimum(guard, rounding)
        raised = bound < least  # tighter than PyTorch's own kernels allow
        which[raised] = SPREAD
        return np.where(raised, least, bound), which

    def check(self, actual: Any, expected: Any) -> BoundCheck:
        """3. for one output of one row [N, K]."""
        a = np.asarray(actual, dtype=np.float64)
        e = np.asarray(expected, dtype=np.float64)
        if a.shape != e.shape:
            detail = f"shape {a.shape} != expected {e.shape}"
            return BoundCheck(False, np.inf, np.inf, 0.0, GUARD, self, detail=detail)
        if a.size == 0:
            return BoundCheck(True, 0.0, 0.0, 0.0, GUARD, self)
        a, e = a.reshape(len(a), -1), e.reshape(len(e), -1)
        bound, which = self.bounds(e)
        diff = np.where(np.isfinite(a), np.abs(a - e), np.inf)
        ratio = diff / np.where(bound > 0, bound, np.finfo(np.float64).tiny)
        worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        outside = tuple(int(i) for i in np.flatnonzero((ratio > 1).any(axis=1)))
        return BoundCheck(
            passed=not outside,
            ratio=float(ratio[worst]),
            max_abs_error=float(diff.max()),
            bound=float(bound[worst]),
            decided_by=str(which[worst]),
            judge=self,
            rows_outside=outside,
            detail="" if np.isfinite(a).all() else "non-finite values",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "guard": dataclasses.asdict(self.guard),
            "factor": self.factor,
            "spread_least": self.spread_least,
            "rounding": None if self.rounding is None else self.rounding.to_dict(),
            "float32_bound": self.float32_bound,
            "least": self.least,
            "spread_factor": SPREAD_FACTOR,
            "floor": self.floor,
            "floor_ulps": FLOOR_ULPS,
        }
