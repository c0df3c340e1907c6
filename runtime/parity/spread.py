"""Each output judged against the spread of the reference, besides ``atol + rtol * |reference|``.

Why: the elementwise tolerance scales with the output's size, and an output's size can be mostly
a constant. In a freshly initialised network the logits are nearly the final bias: smile_cnn
(seed 0) gives about -0.047 on every input, varying by a standard deviation of 0.0011 across the
golden rows. A change of 1% in the first convolution's weights moves them by 1e-5 at batch 1,
inside ``1e-5 + 1e-4 * 0.047`` though it is 1% of what the inputs do to the output. Measured
against the spread, the same change is 0.01, and the CPU's rounding 1e-5 at most.

1. The spread (`reference_spread`): per output column, the standard deviation over every row of
   every batch the reference holds (so a run of batch 1 alone, one row, still has it), and the
   RMS, over the values that parity compares (softmax inputs centred).
2. The bound (`SpreadCheck`): ``max(spread_rtol * std, FLOOR_ULPS * eps32 * rms)`` per column.
   The floor is what float32 can resolve at the output's size, so an output that hardly varies
   (spread near 0) is not held to less than its own rounding.
3. A row passes only if every element is within both its elementwise tolerance and this bound.
   Where the output varies a lot (a trained model), the bound is far looser than the
   elementwise tolerance and changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxedge.runtime.bundle.outputs import PROBABILITIES, centred_logits

if TYPE_CHECKING:
    from onnxedge.runtime.parity.reference import Reference

# 2.: float32 rounding at the output's size, with room for the accumulation of a few hundred
# operations (smile_cnn on the CPU: 3 units of float32 rounding of the logits' RMS at most).
FLOOR_ULPS = 100
_EPS32 = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class Spread:
    """1.: per column of an output, over every reference row: standard deviation and RMS."""

    std: tuple[float, ...]
    rms: tuple[float, ...]
    rows: int

    def bounds(self, rtol: float) -> np.ndarray:
        """2.: the largest error each column may have."""
        std, rms = np.asarray(self.std), np.asarray(self.rms)
        return np.maximum(rtol * std, FLOOR_ULPS * _EPS32 * rms)

    def to_dict(self) -> dict[str, Any]:
        return {"std": list(self.std), "rms": list(self.rms), "rows": self.rows}


def reference_spread(outputs: Iterable[np.ndarray]) -> Spread:
    """1. for the reference arrays [N, K] of every batch."""
    stacked = np.concatenate([np.asarray(o, dtype=np.float64).reshape(len(o), -1) for o in outputs])
    std = stacked.std(axis=0)
    rms = np.sqrt(np.mean(np.square(stacked), axis=0))
    return Spread(tuple(map(float, std)), tuple(map(float, rms)), len(stacked))


@dataclasses.dataclass(frozen=True)
class SpreadCheck:
    """One output of one row against the spread: ``scaled_error`` is the largest error over its
    column's bound, so the check passes at 1 or less. Truthy when it passed."""

    passed: bool
    scaled_error: float
    max_abs_error: float
    spread_rtol: float
    bound: tuple[float, ...]
    rows_outside: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"error/spread bound {self.scaled_error:.2g} (spread rtol {self.spread_rtol:g})"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def output_spreads(reference: Reference, kind: str) -> tuple[Spread, Spread]:
    """1. for the probabilities and the logits (softmax inputs centred, as they are compared)
    over every batch the reference holds."""
    batches = list(reference.batches.values())
    logits = [b.logits for b in batches]
    if kind == PROBABILITIES:
        logits = [centred_logits(x, kind) for x in logits]
    return reference_spread(b.prob for b in batches), reference_spread(logits)


def check_spread(
    actual: Any, expected: Any, spread: Spread, spread_rtol: float
) -> SpreadCheck | None:
    """2. and 3. for one output of one row; None where the shapes differ (the elementwise
    comparison reports that)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape or a.size == 0:
        return None
    a, e = a.reshape(len(a), -1), e.reshape(len(e), -1)
    bound = spread.bounds(spread_rtol)
    if bound.shape[0] != a.shape[1]:
        return None
    diff = np.where(np.isfinite(a), np.abs(a - e), np.inf)
    scaled = diff / np.where(bound > 0, bound, np.finfo(np.float64).tiny)
    outside = tuple(int(i) for i in np.flatnonzero((scaled > 1).any(axis=1)))
    return SpreadCheck(
        passed=not outside,
        scaled_error=float(scaled.max()),
        max_abs_error=float(diff.max()),
        spread_rtol=spread_rtol,
        bound=tuple(map(float, bound)),
        rows_outside=outside,
    )
