"""How parity judges a variant computed in fewer bits (int8, fp16, bf16) against the float64
reference: as the variant it is, by what its gate measured, not by fp32's float32 rounding, which
it is not meant to meet (docs/PARITY.md, "Variants judged as variants").

`onnxedge optimize` gated the variant against fp32 on held-out images (its label agreement at
least the gate's ``min_agreement``; the largest, p99 and mean |Δp| recorded beside it). Parity
holds each row of the variant to:

1. **probabilities**: every element within the bound ``max(MARGIN x the gate's largest |Δp|,
   fp32's bound at that element)`` of the float64 reference. The gate's largest error over N
   held-out images is a sample's maximum; a fresh sample of the same kind of image exceeds it
   with a probability of about m / (N + m) for m rows, so the bound doubles it (`MARGIN`); and a
   variant is never held tighter than fp32 is (an fp16 gate that measured almost no error);
2. **labels**: the share of rows whose label is the reference's at least the gate's
   ``min_agreement``, a flip counting only where the reference lies farther from the threshold
   (or, for K classes, its top class leads by more) than the bound of 1.

Which rows: 1. and 2. hold on the golden data's real images (``image:<file>`` rows, `onnxedge
export --images`, as `make train` exports): the kind of input the gate measured. Its synthetic
rows (all zeros, all ones, grey, ramps, uniform noise) are not: an int8 model clips what such an
input makes inside it where its calibration never saw it (the test suite's int8, calibrated on
images of brightness 0.1-0.9, is 0.03 off on the all-ones row, five times its gate's largest
error), which is quantisation, not a fault. On them only a confident answer turned over fails the
row: a label flip where the reference lies at least `FAR_FROM_THRESHOLD` from the threshold.
A row without real images says so (``labels only``); the JSON gives the largest error of each
kind of row (``max_error_by_kind``).

A variant without gate figures in its manifest (made by hand, or by an onnxedge before the gate
recorded them) is judged as fp32 is, and the row says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxedge.runtime.parity.rounding import BoundCheck, Judge
from onnxedge.runtime.parity.rows import LabelAgreement, label_agreement, top1_agreement
from onnxedge.runtime.parity.tolerances import Tolerance
from onnxedge.runtime.variants.manifest import VariantEntry

# 1.: the gate's largest |Δp| times this.
MARGIN = 2.0
# Synthetic rows: a flip fails only where the reference probability is at least this far from the
# threshold (for K classes: its top class leads by twice this), a confident answer turned over.
FAR_FROM_THRESHOLD = 0.25
# The precisions judged as variants; an fp32 variant (ORT format, uint8 input) is judged as fp32.
REDUCED = ("int8", "fp16", "bf16")
GATE, FP32_BOUND = "gate", "fp32"
IMAGE_KIND = "image:"
# The kinds of golden row, as the JSON groups their largest errors.
SYNTHETIC_KINDS = ("zeros", "ones", "grey", "gradient-h", "gradient-v")


def reduced_precision(entry: VariantEntry | None) -> bool:
    """Whether ``entry`` (None: model.onnx) computes in fewer bits than fp32."""
    return entry is not None and entry.precision in REDUCED


@dataclasses.dataclass(frozen=True)
class VariantBounds:
    """What a variant's rows are held to, from its manifest entry's gate (module docstring)."""

    variant: str
    precision: str
    min_agreement: float  # the gate's, a share
    gate_max: float  # the gate's largest |Δp| against fp32
    gate_p99: float | None
    gate_images: int
    gate_provider: str
    gated: bool  # False: written with --no-gate (the figures are what it measured)

    @property
    def gate_bound(self) -> float:
        return MARGIN * self.gate_max

    @classmethod
    def of(cls, entry: VariantEntry | None) -> VariantBounds | None:
        """The bounds of ``entry``; None where it is fp32's precision or records no gate figures
        (then it is judged as fp32)."""
        if not reduced_precision(entry):
            return None
        assert entry is not None
        gate = entry.block.get("gate")
        if not isinstance(gate, Mapping):
            return None
        criteria = gate.get("criteria")
        agreement = criteria.get("min_agreement") if isinstance(criteria, Mapping) else None
        largest = _number(gate.get("max_prob_error"))
        if agreement is None or largest is None or not 0 <= float(agreement) <= 1:
            return None
        return cls(
            variant=entry.name,
            precision=entry.precision,
            min_agreement=float(agreement),
            gate_max=largest,
            gate_p99=_number(gate.get("p99_prob_error")),
            gate_images=int(gate.get("images", 0) or 0),
            gate_provider=str(gate.get("provider", "")),
            gated=entry.gated,
        )

    def describe(self) -> str:
        """The bound in words: ``2x int8's gate |Δp| max 0.071 (600 images, CPUExecutionProvider)
        and label agreement >= 99.50%``."""
        where = ", ".join(p for p in (f"{self.gate_images} images", self.gate_provider) if p)
        ungated = "; it missed its gate (written with --no-gate)" if not self.gated else ""
        return (
            f"{MARGIN:g}x {self.variant}'s gate |Δp| max {self.gate_max:.2g} ({where}) and label "
            f"agreement >= {100 * self.min_agreement:.2f}%{ungated}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "margin": MARGIN,
            "gate_bound": self.gate_bound,
            "basis": self.describe(),
        }


@dataclasses.dataclass(frozen=True)
class VariantVerdict:
    """One row of a variant judged: its probabilities against their bound and its labels on the
    image rows, the labels of its synthetic rows, and what failed."""

    bounds: VariantBounds
    prob_check: BoundCheck | None  # None where the row holds no real image
    labels: LabelAgreement  # every row, as the row reports them
    image_rows: int
    agreement: float | None  # share of image rows whose label is the reference's
    synthetic_flips: tuple[int, ...]  # synthetic rows turned over far from the threshold
    max_error_by_kind: Mapping[str, float]  # image, structured, random: the largest |Δp|
    failures: tuple[str, ...]

    @property
    def decided_by(self) -> str:
        """Which bound decided: ``labels`` where the image rows' label agreement failed, else
        the probability bound's term at its element nearest the bound (``gate`` or ``fp32``);
        ``labels only`` for a row without real images."""
        if self.agreement is not None and self.agreement < self.bounds.min_agreement - _EPS:
            return "labels"
        return "labels only" if self.prob_check is None else self.prob_check.decided_by

    def to_dict(self) -> dict[str, Any]:
        return {
            "bounds": self.bounds.to_dict(),
            "decided_by": self.decided_by,
            "image_rows": self.image_rows,
            "image_label_agreement": self.agreement,
            "synthetic_flips": list(self.synthetic_flips),
            "max_error_by_kind": dict(self.max_error_by_kind),
            "prob": None if self.prob_check is None else self.prob_check.to_dict(),
            "failures": list(self.failures),
        }


# Shares of whole rows are compared with this margin, so that 199/200 is not below 99.5% by a
# rounding.
_EPS = 1e-9


def judge_variant(
    bounds: VariantBounds,
    prob: np.ndarray,
    expected: np.ndarray,
    kinds: Sequence[str],
    *,
    fp32_guard: Tolerance,
    threshold: float | None,
) -> VariantVerdict:
    """One row: ``prob`` (the variant's) against the float64 reference ``expected`` [N, K], its
    rows of ``kinds``; ``fp32_guard``: fp32's tolerance on the probabilities of this target."""
    actual = np.asarray(prob, dtype=np.float64).reshape(len(expected), -1)
    reference = np.asarray(expected, dtype=np.float64).reshape(len(expected), -1)
    images = np.array([str(k).startswith(IMAGE_KIND) for k in kinds], dtype=bool)
    within = Tolerance(bounds.gate_bound, 0.0)
    failures = []
    check = agreement = None
    if images.any():
        rows = np.flatnonzero(images)
        check = _prob_check(actual[images], reference[images], bounds.gate_bound, fp32_guard)
        if not check:
            outside = ", ".join(f"{rows[i]} ({kinds[rows[i]]})" for i in check.rows_outside[:4])
            more = len(check.rows_outside) - 4
            outside += f", and {more} more" if more > 0 else ""
            failures.append(f"prob outside the variant's bound {check.bound:.2g} in rows {outside}")
        image_labels = _labels(actual[images], reference[images], threshold, within)
        agreement = 1.0 - len(image_labels.flips_outside_tolerance) / image_labels.total
        if agreement < bounds.min_agreement - _EPS:
            flipped = ", ".join(
                f"{rows[i]} ({kinds[rows[i]]})" for i in image_labels.flips_outside_tolerance[:4]
            )
            failures.append(
                f"labels of {100 * agreement:.1f}% of the images agree < the gate's "
                f"{100 * bounds.min_agreement:.2f}% (flipped: {flipped})"
            )
    far = _labels(actual, reference, threshold, Tolerance(FAR_FROM_THRESHOLD, 0.0))
    synthetic = tuple(i for i in far.flips_outside_tolerance if not images[i])
    if synthetic:
        named = ", ".join(f"{i} ({kinds[i]})" for i in synthetic[:4])
        failures.append(
            f"a confident label turned over (reference {FAR_FROM_THRESHOLD:g} or more from the "
            f"threshold) in rows {named}"
        )
    return VariantVerdict(
        bounds=bounds,
        prob_check=check,
        labels=_labels(actual, reference, threshold, within),
        image_rows=int(images.sum()),
        agreement=agreement,
        synthetic_flips=synthetic,
        max_error_by_kind=_by_kind(np.abs(actual - reference).max(axis=1), kinds),
        failures=tuple(failures),
    )


def _by_kind(errors: np.ndarray, kinds: Sequence[str]) -> dict[str, float]:
    """The largest error of each kind of row: image, structured (zeros ... ramps), random."""
    groups: dict[str, list[float]] = {}
    for error, kind in zip(errors, kinds, strict=True):
        if kind.startswith(IMAGE_KIND):
            group = "image"
        else:
            group = "structured" if kind in SYNTHETIC_KINDS else kind
        groups.setdefault(group, []).append(float(error) if np.isfinite(error) else math.inf)
    return {group: max(values) for group, values in groups.items()}


def _labels(
    actual: np.ndarray, expected: np.ndarray, threshold: float | None, tolerance: Tolerance
) -> LabelAgreement:
    if threshold is not None and expected.shape[1] == 1:
        return label_agreement(actual, expected, threshold=threshold, tolerance=tolerance)
    return top1_agreement(actual, expected, tolerance=Tolerance(tolerance.atol / 2, 0.0))


def _prob_check(
    actual: np.ndarray, expected: np.ndarray, gate_bound: float, fp32_guard: Tolerance
) -> BoundCheck:
    """1.: each element within ``max(gate_bound, fp32's guard at it)``; which of the two
    decided at the element nearest its bound."""
    fp32 = fp32_guard.atol + fp32_guard.rtol * np.abs(expected)
    bound = np.maximum(fp32, gate_bound)
    diff = np.where(np.isfinite(actual), np.abs(actual - expected), np.inf)
    ratio = diff / np.where(bound > 0, bound, np.finfo(np.float64).tiny)
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return BoundCheck(
        passed=bool((ratio <= 1).all()),
        ratio=float(ratio[worst]),
        max_abs_error=float(diff.max()),
        bound=float(bound[worst]),
        decided_by=GATE if gate_bound >= fp32[worst] else FP32_BOUND,
        judge=Judge(Tolerance(gate_bound, 0.0)),
        rows_outside=tuple(int(i) for i in np.flatnonzero((ratio > 1).any(axis=1))),
        detail="" if np.isfinite(actual).all() else "non-finite values",
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None
