"""One parity row (`ParityRow`: a provider and TF32 setting at one batch size) and the label
agreement it reports: at the bundle's threshold for one output, of the top-1 class for K."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from onnxedge.runtime.compare import Comparison
from onnxedge.runtime.engines.base import ONNXRUNTIME
from onnxedge.runtime.engines.onnxruntime.session import provider_name
from onnxedge.runtime.lines import INDENT, LINE_WIDTH, fit
from onnxedge.runtime.parity.rounding import BoundCheck
from onnxedge.runtime.parity.tolerances import Tolerance, Tolerances

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclasses.dataclass(frozen=True)
class LabelAgreement:
    """The 0.5-threshold labels of actual against reference probabilities."""

    agree: int
    total: int
    flips_outside_tolerance: tuple[int, ...]  # rows whose label flipped though the reference
    # probability is farther from the threshold than the tolerance

    def __bool__(self) -> bool:
        return not self.flips_outside_tolerance

    def describe(self) -> str:
        """``labels A/T agree``, and how many flips lie where the reference's own classes (or its
        probability and the threshold) are within the bound of each other: ties, not failures."""
        text = f"labels {self.agree}/{self.total} agree"
        tied = self.total - self.agree - len(self.flips_outside_tolerance)
        if tied:
            text += f" ({tied} flip{'s' if tied != 1 else ''} on ties)"
        return text


def label_agreement(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    threshold: float,
    tolerance: Tolerance,
    bounds: np.ndarray | None = None,
) -> LabelAgreement:
    """The labels at ``threshold``. A flip counts only where the reference probability lies
    farther from the threshold than the tolerance and, where given, than ``bounds`` (the row's
    bound on each probability's error, `Judge.bounds`: a probability within its bound can cross
    the threshold only where the reference lies that close to it)."""
    a = np.asarray(actual, dtype=np.float64).reshape(-1)
    e = np.asarray(expected, dtype=np.float64).reshape(-1)
    flipped = (a >= threshold) != (e >= threshold)
    near = np.abs(e - threshold) <= tolerance.atol + tolerance.rtol * np.abs(e)
    if bounds is not None:
        near |= np.abs(e - threshold) <= np.asarray(bounds, dtype=np.float64).reshape(-1)
    bad = tuple(int(i) for i in np.flatnonzero(flipped & ~near))
    return LabelAgreement(int((~flipped).sum()), int(a.size), bad)


def top1_agreement(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    tolerance: Tolerance,
    bounds: np.ndarray | None = None,
) -> LabelAgreement:
    """The top-1 classes of actual against reference probabilities [N, K]. A row whose top class
    changed counts as a flip only where the reference's top class leads the new one by more than
    twice the tolerance (a near tie may go either way) and, where ``bounds`` [N, K] is given (the
    row's bound on each probability's error, `Judge.bounds`), by more than the two classes'
    bounds together: within them the two may swap without either leaving its bound."""
    a = np.asarray(actual, dtype=np.float64).reshape(len(expected), -1)
    e = np.asarray(expected, dtype=np.float64).reshape(len(expected), -1)
    rows = np.arange(len(e))
    top_a, top_e = a.argmax(axis=1), e.argmax(axis=1)
    flipped = top_a != top_e
    lead = e[rows, top_e] - e[rows, top_a]
    near = lead <= 2 * (tolerance.atol + tolerance.rtol * np.abs(e[rows, top_e]))
    if bounds is not None:
        b = np.asarray(bounds, dtype=np.float64).reshape(e.shape)
        near |= lead <= b[rows, top_e] + b[rows, top_a]
    bad = tuple(int(i) for i in np.flatnonzero(flipped & ~near))
    return LabelAgreement(int((~flipped).sum()), len(e), bad)


@dataclasses.dataclass(frozen=True)
class ParityRow:
    """One provider (and TF32 setting) at one batch size. Truthy only when it ran and passed."""

    provider: str
    batch: int
    status: str  # passed | failed | skipped
    tolerances: Tolerances
    tf32: str | None = None
    # Whether onnxruntime reported the TF32 setting it runs with (None: no session, or no TF32).
    tf32_confirmed: bool | None = None
    prob: Comparison | None = None
    logits: Comparison | None = None
    labels: LabelAgreement | None = None
    # Informational: the same outputs against PyTorch's float32 reference.
    prob_vs_f32: Comparison | None = None
    logits_vs_f32: Comparison | None = None
    # The verdict: each output against its bound (`onnxedge.runtime.parity.rounding`).
    prob_check: BoundCheck | None = None
    logits_check: BoundCheck | None = None
    reason: str = ""  # why it failed or was skipped
    required: bool = False
    engine: str = ONNXRUNTIME
    precision: str | None = None  # OpenVINO's inference precision; None for onnxruntime
    # A variant in fewer bits judged as a variant (`onnxedge.runtime.parity.variant_judge.
    # VariantVerdict`); None where the row is judged as fp32 is.
    variant: Any = None
    # The layer check (`onnxedge.runtime.parity.layer_check.LayerCheck`): the row's intermediate
    # tensors against the golden layers; None where they were not judged.
    layers: Any = None

    def __bool__(self) -> bool:
        return self.status == PASSED

    @property
    def label(self) -> str:
        """The row's name: the provider for onnxruntime (``cpu``), ``openvino cpu f32`` else."""
        if self.engine == ONNXRUNTIME:
            return self.provider
        return f"{self.engine} {self.provider} {self.precision}"

    @property
    def ran(self) -> bool:
        return self.prob is not None

    @property
    def tf32_label(self) -> str:
        """``tf32 on``/``tf32 off`` as onnxruntime reported it; where it did not report it, the
        setting is only what was requested, and the label says so."""
        if not self.tf32:
            return "tf32 n/a"
        if self.ran and not self.tf32_confirmed:
            return f"tf32 {self.tf32} (requested, not confirmed by onnxruntime)"
        return f"tf32 {self.tf32}"

    def __str__(self) -> str:
        return self.line(verbose=True)

    def line(self, *, verbose: bool = False) -> str:
        """The row as printed: without ``verbose`` at most `LINE_WIDTH` characters (each
        output's error over its bound and the bound that decided; TF32 where it applies);
        with it every figure."""
        tf32 = self.tf32_label
        if not verbose:
            tf32 = "" if not self.tf32 else tf32.replace("requested, not confirmed", "unconfirmed")
            tf32 = tf32.replace(" by onnxruntime", "")
        head = " | ".join(
            p for p in (self.status.upper(), self.label, f"batch {self.batch}", tf32) if p
        )
        if not self.ran:
            return f"{head} | {self.reason}" if verbose else fit(f"{head} | {self.reason}")
        if self.variant is not None:
            parts = [head, self._variant_part(verbose)]
        elif verbose:
            parts = [head, _describe("prob", self.prob), _describe("logits", self.logits)]
            parts += [
                f"{name} bound {_bound(check)}"
                for name, check in (("prob", self.prob_check), ("logits", self.logits_check))
                if check is not None
            ]
        else:
            ratios = ", ".join(
                f"{name} {check.ratio:.2g} {check.decided_by}"
                for name, check in (("prob", self.prob_check), ("logits", self.logits_check))
                if check is not None
            )
            parts = [head, f"error/bound {ratios}"]
        if verbose and self.layers is not None and self.variant is None:
            parts.append(self.layers.part(verbose=True))
        if self.labels is not None:
            parts.append(self.labels.describe())
        if verbose and self.variant is not None:
            parts.append(f"bound: {self.variant.bounds.describe()}")
        if verbose:
            return " | ".join([*parts, self.reason] if self.reason else parts)
        if self.layers is not None and self.variant is None:
            # The layer check's largest error/bound where the line fits (a failure is named below).
            with_layers = [parts[0], f"{parts[1]}, {self.layers.part()}", *parts[2:]]
            if len(" | ".join(with_layers)) <= LINE_WIDTH:
                parts = with_layers
        text = fit(" | ".join(parts))
        return f"{text}\n{fit(INDENT + self.reason)}" if self.reason else text

    def _variant_part(self, verbose: bool) -> str:
        """A variant's verdict: its probability error over the variant's bound on the real images
        and which term decided (``gate`` or ``fp32``), or that the row has none; its logits are
        not judged (the gate measured none)."""
        c = self.variant.prob_check
        if c is None:
            return "no real images: labels only"
        text = f"error/bound prob {c.ratio:.2g} {c.decided_by} on {self.variant.image_rows} images"
        if verbose:
            text += f" (max_abs {c.max_abs_error:.2g}, bound {c.bound:.2g})"
            if self.logits is not None:
                text += f" | logits max_abs {self.logits.max_abs_error:.2g} (not judged)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": str(self),
            "provider": self.provider,
            "provider_name": provider_name(self.provider),
            "engine": self.engine,
            "precision": self.precision,
            "label": self.label,
            "batch": self.batch,
            "tf32": self.tf32,
            "tf32_confirmed": self.tf32_confirmed,
            "tf32_label": self.tf32_label,
            "status": self.status,
            "required": self.required,
            "reason": self.reason,
            "tolerances": self.tolerances.to_dict(),
            "prob": _comparison_dict(self.prob),
            "logits": _comparison_dict(self.logits),
            "labels": None
            if self.labels is None
            else {
                "threshold_agree": self.labels.agree,
                "total": self.labels.total,
                "flips_outside_tolerance": list(self.labels.flips_outside_tolerance),
            },
            "bound": {
                "prob": None if self.prob_check is None else self.prob_check.to_dict(),
                "logits": None if self.logits_check is None else self.logits_check.to_dict(),
            },
            "vs_float32_reference": {
                "prob": _comparison_dict(self.prob_vs_f32),
                "logits": _comparison_dict(self.logits_vs_f32),
            },
            "variant_judge": None if self.variant is None else self.variant.to_dict(),
            "layers": None if self.layers is None else self.layers.to_dict(),
        }


def _describe(name: str, c: Comparison | None) -> str:
    if c is None:
        return f"{name} n/a"
    text = (
        f"{name} max_abs {c.max_abs_error:.2g} max_rel {c.max_rel_error:.2g} "
        f"mean_abs {c.mean_abs_error:.2g} (atol {c.atol:g}, rtol {c.rtol:g})"
    )
    return text + (f" {c.detail}" if c.detail else "")


def _bound(check: BoundCheck) -> str:
    """A check's bound and the three it was chosen from: ``5.8e-06 (floor; float32 1e-07, floor
    5.8e-06, guard atol 1e-05, rtol 0.0001)``."""
    terms = [f"float32 {check.float32_bound:.2g}"] if check.float32_bound is not None else []
    terms += [f"floor {check.floor:.2g}"] if check.floor is not None else []
    terms.append(f"guard {check.guard}")
    least = check.judge.least
    terms += [f"spread {least:.2g}"] if least is not None else []
    return f"{check.bound:.2g} ({check.decided_by}: {', '.join(terms)}) ratio {check.ratio:.2g}"


def _comparison_dict(c: Comparison | None) -> dict[str, Any] | None:
    return None if c is None else c.to_dict()
