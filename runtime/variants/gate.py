"""The accuracy gate a variant must pass before it goes into a bundle.

A variant is judged against ``model.onnx`` (fp32) on the same held-out images, both run by the
runtime (onnxruntime), on two criteria (`GateCriteria`):

1. label agreement with fp32: the share of images whose label (probability at or above the
   bundle's threshold) is fp32's, at least ``min_agreement`` (99.5 %);
2. accuracy drop: fp32's accuracy on the true labels minus the variant's, in percentage points,
   at most ``max_accuracy_drop_pp`` (0.5).

A K-class model's label is its top class (the largest of its K probabilities, no threshold), and
its probability error an image's largest over the K classes. The maximum, 99th-percentile and
mean absolute probability error against fp32 are reported beside them. An output that is not a
probability (NaN, an infinity, outside [0, 1]) counts as a disagreement, a wrong answer and an
infinite error. `judge` is pure (arrays in, `GateResult` out), so each criterion is tested on
arrays that miss it by a known amount.

For an int8 variant the gate also reports how far this CPU's int8 kernels are from the same file's
float reference (onnxruntime with its graph optimisations off, which computes every Q/DQ pair in
float as the file writes it), as ``kernel_error``, the largest absolute probability difference.
It is not a criterion: a CPU with VNNI adds int8 products in 32 bits, so it would judge nothing
there for saturation, and onnxruntime's fused int8 ops (QLinearAdd, QLinearSigmoid, ...) round
otherwise than the float reference, so on models that have them it is not 0 even where nothing
saturates. But where a variant misses its gate and this figure is large, the variant's numbers
depend on the CPU's kernels, and the FAILED line says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PASSED = "PASSED"
_EPS = 1e-9  # far below one image in a billion, far above float rounding of a share
# Above this |dp| between an int8 variant's kernels and its float reference, a FAILED line names
# the kernels as a cause: rounding alone gave at most 3e-4 on the smile model (docs/VARIANTS.md).
KERNEL_NOTE = 0.01
FAILED = "FAILED"
UNGATED = "UNGATED"


@dataclasses.dataclass(frozen=True)
class GateCriteria:
    min_agreement: float = 0.995  # share of images, in [0, 1]
    max_accuracy_drop_pp: float = 0.5  # percentage points

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"expected min_agreement in [0, 1], got {self.min_agreement!r}")
        if not (math.isfinite(self.max_accuracy_drop_pp) and self.max_accuracy_drop_pp >= 0):
            raise ValueError(
                f"expected max_accuracy_drop_pp >= 0, got {self.max_accuracy_drop_pp!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class GateResult:
    """How a variant did against fp32 on ``images`` held-out images; truthy when it passed."""

    variant: str
    images: int
    agreement: float  # share of images where the variant's label is fp32's
    flips: int  # images where it is not
    accuracy: float
    fp32_accuracy: float
    max_prob_error: float
    p99_prob_error: float
    mean_prob_error: float
    not_probabilities: int  # outputs that are NaN, infinite or outside [0, 1]
    criteria: GateCriteria
    threshold: float | None  # None: a K-class model's label is its top class
    split: str = "test"
    provider: str = ""
    # int8: the largest |dp| between this CPU's kernels and the float reference (module docstring)
    kernel_error: float | None = None
    weights_7_bit: Any = None  # int8: the quantiser's `Int8Config.weights_7_bit`, where known

    @property
    def accuracy_drop_pp(self) -> float:
        return 100.0 * (self.fp32_accuracy - self.accuracy)

    @property
    def misses(self) -> tuple[str, ...]:
        """One phrase per criterion missed, saying by how much. Shares of whole images are
        compared with a margin of `_EPS`, so that 199/200 is not below 99.5 % by a rounding."""
        out = []
        c = self.criteria
        if self.agreement < c.min_agreement - _EPS:
            out.append(
                f"label agreement {100 * self.agreement:.2f}% < {100 * c.min_agreement:.2f}% "
                f"(missed by {100 * (c.min_agreement - self.agreement):.2f} pp: {self.flips} of "
                f"{self.images} labels differ from fp32)"
            )
        if self.accuracy_drop_pp > c.max_accuracy_drop_pp + 100 * _EPS:
            out.append(
                f"accuracy drop {self.accuracy_drop_pp:.2f} pp > {c.max_accuracy_drop_pp:.2f} pp "
                f"(missed by {self.accuracy_drop_pp - c.max_accuracy_drop_pp:.2f} pp)"
            )
        return tuple(out)

    @property
    def passed(self) -> bool:
        return not self.misses

    def __bool__(self) -> bool:
        return self.passed

    def summary(self, *, verbose: bool = True) -> str:
        """The figures on one line (no verdict); without ``verbose`` shorter phrasing and the
        probability error's largest value only (p99 and mean stay in -v and the JSON)."""
        bad = (
            f", {self.not_probabilities} outputs not probabilities"
            if self.not_probabilities
            else ""
        )
        if not verbose:
            return (
                f"agreement {100 * self.agreement:.2f}% ({self.flips}/{self.images}) | "
                f"accuracy {100 * self.accuracy:.2f}% vs fp32 {100 * self.fp32_accuracy:.2f}% "
                f"(drop {self.accuracy_drop_pp:+.2f} pp) | |Δp| max {_g(self.max_prob_error)}{bad}"
            )
        spread = f", p99 {_g(self.p99_prob_error)}, mean {_g(self.mean_prob_error)}"
        return (
            f"agreement {100 * self.agreement:.2f}% ({self.flips} of {self.images} differ) | "
            f"accuracy {100 * self.accuracy:.2f}% vs fp32 {100 * self.fp32_accuracy:.2f}% "
            f"(drop {self.accuracy_drop_pp:+.2f} pp) | |Δp| max {_g(self.max_prob_error)}"
            f"{spread}{bad}{self._kernels()}"
        )

    def _kernels(self) -> str:
        if self.kernel_error is None:
            return ""
        return f" | kernels vs float reference |Δp| max {_g(self.kernel_error)}"

    def line(self, *, enforced: bool = True, verbose: bool = True) -> str:
        """``PASSED | int8 | …`` or ``FAILED | int8 | … | missed: …``; ``UNGATED`` when the gate
        was measured but not enforced (``--no-gate``). Without ``verbose``, shorter figures."""
        status = PASSED if self.passed else (FAILED if enforced else UNGATED)
        text = f"{status} | {self.variant} | {self.summary(verbose=verbose)}"
        if not self.passed:
            text += " | missed: " + "; ".join(self.misses)
            if self.kernel_error is not None and self.kernel_error > KERNEL_NOTE:
                remedy = (  # every weight in 7 bits already: nothing saturates; the fused ops
                    "every weight is in 7 bits already, so the rest is onnxruntime's fused int8 ops"
                    if self.weights_7_bit == "all"
                    else "--int8-7-bit-weights all keeps them in range"
                )
                text += (
                    f" | this CPU's int8 kernels differ from the file's float reference by |Δp| "
                    f"up to {_g(self.kernel_error)}: its numbers depend on the CPU (x86 without "
                    f"VNNI adds u8 x s8 products in pairs into 16 bits, which saturate; {remedy})"
                )
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "split": self.split,
            "images": self.images,
            "provider": self.provider,
            "threshold": self.threshold,
            "label_agreement": self.agreement,
            "labels_differing": self.flips,
            "accuracy": self.accuracy,
            "fp32_accuracy": self.fp32_accuracy,
            "accuracy_drop_pp": self.accuracy_drop_pp,
            "max_prob_error": _json_float(self.max_prob_error),
            "p99_prob_error": _json_float(self.p99_prob_error),
            "mean_prob_error": _json_float(self.mean_prob_error),
            "not_probabilities": self.not_probabilities,
            "kernel_prob_error": (
                None if self.kernel_error is None else _json_float(self.kernel_error)
            ),
            "criteria": self.criteria.to_dict(),
            "misses": list(self.misses),
        }


def _p99(error: np.ndarray) -> float:
    """The 99th percentile (numpy's linear method); inf where it falls among infinite errors."""
    with np.errstate(invalid="ignore"):
        value = float(np.percentile(error, 99, method="linear"))
    return math.inf if math.isnan(value) else value


def _g(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2g}"


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


def judge(
    variant: str,
    fp32: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    threshold: float | None,
    criteria: GateCriteria | None = None,
    split: str = "test",
    provider: str = "",
    float_reference: Sequence[float] | np.ndarray | None = None,
    weights_7_bit: Any = None,
) -> GateResult:
    """Judge ``candidate``'s probabilities against ``fp32``'s on images whose true class indices
    are ``labels`` (1 positive), as the module docstring says: [N] (or [N, 1]) probabilities of
    the positive class, or [N, K] class probabilities (K >= 2; the label is the top class).
    ``float_reference``: an int8 candidate's outputs by its float reference, for its
    ``kernel_error``; ``weights_7_bit``: what its quantiser kept in 7 bits (the line's hint)."""
    reference = np.asarray(fp32, dtype=np.float64)
    values = np.asarray(candidate, dtype=np.float64)
    classes = reference.shape[1] if reference.ndim == 2 else 1
    reference, values = reference.reshape(-1, classes), values.reshape(-1, classes)
    truth = np.asarray(labels).reshape(-1).astype(np.int64)
    if not (len(reference) == len(values) == len(truth)) or len(truth) == 0:
        raise ValueError(
            f"expected as many fp32 outputs, variant outputs and labels (at least one), got "
            f"{len(reference)}, {len(values)} and {len(truth)}"
        )
    with np.errstate(invalid="ignore"):
        valid = (np.isfinite(values) & (values >= 0.0) & (values <= 1.0)).all(axis=1)
    if classes == 1:
        if threshold is None:
            raise ValueError("expected a threshold for the probabilities of a binary model")
        label_ref = (reference[:, 0] >= threshold).astype(np.int64)
        label = (values[:, 0] >= threshold).astype(np.int64)
        truth = (truth != 0).astype(np.int64)
    else:
        label_ref, label = reference.argmax(axis=1), np.nan_to_num(values).argmax(axis=1)
    label = np.where(valid, label, -1)  # invalid: the wrong label
    error = np.where(valid, np.abs(values - reference).max(axis=1), np.inf)
    agree = label == label_ref
    kernel_error = None
    if float_reference is not None:
        by_float = np.asarray(float_reference, dtype=np.float64).reshape(values.shape)
        with np.errstate(invalid="ignore"):
            kernel = np.abs(values - by_float).max(axis=1)
        kernel_error = float(np.where(np.isnan(kernel), np.inf, kernel).max())
    return GateResult(
        variant=variant,
        images=len(truth),
        agreement=float(agree.mean()),
        flips=int((~agree).sum()),
        accuracy=float((valid & (label == truth)).mean()),
        fp32_accuracy=float((label_ref == truth).mean()),
        max_prob_error=float(error.max()),
        p99_prob_error=_p99(error),
        mean_prob_error=float(error.mean()),
        not_probabilities=int((~valid).sum()),
        criteria=criteria or GateCriteria(),
        threshold=None if threshold is None else float(threshold),
        split=split,
        provider=provider,
        kernel_error=kernel_error,
        weights_7_bit=weights_7_bit,
    )


__all__ = ["FAILED", "KERNEL_NOTE", "PASSED", "UNGATED", "GateCriteria", "GateResult", "judge"]
