"""One tensor of the graph against its reference, judged against the tensor's own scale.

An intermediate tensor's error is its largest absolute error over the RMS of its reference (its
spread), ``error/scale``: a large activation is not flagged for an error that is small beside it,
and a small one is not passed for an error that is small in absolute terms only. It must stay
within `layer_tolerance`: the row's relative tolerance on the logits, ``rtol``, times

1. `CREST` (4): the largest error of an intermediate tensor, over its RMS, runs well above the
   logits' relative error, which the global average and the final layer average down (smile_cnn,
   OpenVINO bf16: 0.02-0.036 in every tensor up to the pooling, 0.0025 in the logits; the largest
   activations lie 4-7 times above the RMS), and
2. ``sqrt(depth / max_depth)``, at least `MIN_DEPTH_SHARE`: rounding errors of successive layers
   add up like a random walk, so a tensor may hold the share of the budget its depth gives it
   (smile_cnn on the CPU: 7e-7 after the first convolution, 2e-6 after the fourth), and the
   first layers a quarter of it, so that in a deep graph the first layer, which rounds as much as
   any, is not held to a sliver.

The tensors the row itself judges (the graph's output and the logits) are held to the row's own
bound (`onnxedge.runtime.parity.rounding`): a row whose failure the localizing run reproduces
always has a divergent layer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxedge.runtime.parity.exposed import ExposedTensor
from onnxedge.runtime.parity.layers import ModuleRef
from onnxedge.runtime.parity.rounding import Judge
from onnxedge.runtime.parity.rows import FAILED, PASSED

NO_REFERENCE = "no reference"
CREST = 4.0
# How much worse than PyTorch's float32 run with its global means summed in sequence an engine
# may round a tensor (`layer_bound`; why 4: docs/PARITY.md, "The layer check", its bound's third
# term).
SEQUENCE_FACTOR = 4.0
MIN_DEPTH_SHARE = 0.25
# Relative errors are counted where the reference is at least this fraction of its scale: next to
# a zero (a ReLU's output) any error is relatively infinite.
_SIGNIFICANT = 1e-3


def layer_tolerance(rtol: float, depth: int, max_depth: int) -> float:
    """The bound on an intermediate tensor's error/scale at ``depth`` of ``max_depth``."""
    share = math.sqrt(max(depth, 1) / max(max_depth, 1))
    return CREST * rtol * max(MIN_DEPTH_SHARE, min(share, 1.0))


def layer_bound(
    tolerance: float,
    expected: Any,
    *,
    scale: float | None = None,
    float32_error: float | None = None,
    factor: float | None = None,
    sequence_error: float | None = None,
) -> float:
    """The layer check's bound on a tensor's error/scale: `layer_tolerance`, or where the golden
    layers record PyTorch's own float32 error at the tensor (``float32_error``, absolute), at
    least ``factor`` times that error over the tensor's scale (``scale``, else the RMS of
    ``expected``): an engine may round ``factor`` times worse than PyTorch's float32 run of the
    same model, as its outputs may (`onnxedge.runtime.parity.rounding`), however ill-conditioned
    the model (random regnety004 with ImageNet's mean and std: PyTorch's kernels 7e-3 apart on
    logits of RMS 40).

    Where the golden layers also record the error of PyTorch's float32 run whose global means are
    summed in sequence (``sequence_error``: as ONNX Runtime's `GlobalAveragePool` sums them,
    `onnxedge.export.sequential_means`), at least `SEQUENCE_FACTOR` times that: the tensors after
    a mean over many values carry that sum's rounding, which the default run hardly has."""
    if factor is None or (float32_error is None and sequence_error is None):
        return tolerance
    if scale is None:
        e = np.asarray(expected, dtype=np.float64)
        scale = float(np.sqrt(np.mean(np.square(e)))) if e.size else 0.0
    if not scale > 0:
        return tolerance
    rounding = factor * (float32_error or 0.0)
    return max(tolerance, rounding / scale, SEQUENCE_FACTOR * (sequence_error or 0.0) / scale)


@dataclasses.dataclass(frozen=True)
class TensorRecords:
    """What a layer reference records of its tensors for `layer_bound`, by tensor name: the scale
    a tensor is judged at where not its own RMS, PyTorch's own float32 error there, and that of
    its float32 run with global means summed in sequence. Each mapping may be empty (golden
    layers written before it, or a reference that is another engine's run)."""

    scales: Mapping[str, float] = dataclasses.field(default_factory=dict)
    float32_errors: Mapping[str, float] = dataclasses.field(default_factory=dict)
    sequence_errors: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, layers: Any) -> TensorRecords:
        """The records ``layers`` (golden layers, or any reference) holds; empty where none."""
        return cls(
            getattr(layers, "scales", None) or {},
            getattr(layers, "float32_errors", None) or {},
            getattr(layers, "sequence_errors", None) or {},
        )

    def bound(self, name: str, tolerance: float, expected: Any, factor: float | None) -> float:
        """`layer_bound` of tensor ``name`` (reference ``expected``) with these records."""
        return layer_bound(
            tolerance,
            expected,
            scale=self.scales.get(name),
            float32_error=self.float32_errors.get(name),
            factor=factor,
            sequence_error=self.sequence_errors.get(name),
        )


@dataclasses.dataclass(frozen=True)
class LayerResult:
    """One tensor against its reference: its largest absolute and relative errors, its scale (the
    reference's RMS), ``scaled_error`` = max_abs / scale, and the verdict against ``tolerance``
    (on scaled_error), or against the row's bound (``row_judge``) where it has one."""

    tensor: ExposedTensor
    module: ModuleRef | None
    status: str  # passed | failed | no reference
    tolerance: float
    row_judge: Judge | None = None
    shape: tuple[int, ...] = ()
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    scale: float = 0.0
    scaled_error: float = 0.0
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def compared(self) -> bool:
        return self.status != NO_REFERENCE

    def label(self) -> str:
        """``Conv 'node_conv2d_2' (module conv3 (Conv2d))``; a tensor of no module by its node."""
        text = f"{self.tensor.op_type} {self.tensor.node!r}"
        return text + (f" (module {self.module})" if self.module else "")

    def tolerance_text(self) -> str:
        if self.row_judge is not None:
            return "row's bound"
        return f"{self.tolerance:.2g}"

    def errors(self) -> str:
        if not self.compared:
            return "no reference"
        text = (
            f"max_abs {self.max_abs_error:.2g} max_rel {self.max_rel_error:.2g} "
            f"error/scale {self.scaled_error:.2g}"
        )
        if self.row_judge is not None:
            verdict = "outside" if self.failed else "within"
            text += f", {verdict} the row's bound"
        else:
            text += (" > " if self.failed else " <= ") + f"tolerance {self.tolerance:.2g}"
        return text + (f" ({self.detail})" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor.name,
            "node": self.tensor.node,
            "op_type": self.tensor.op_type,
            "module": None if self.module is None else self.module.to_dict(),
            "index": self.tensor.index,
            "depth": self.tensor.depth,
            "shape": list(self.shape),
            "status": self.status,
            "max_abs_error": json_float(self.max_abs_error),
            "max_rel_error": json_float(self.max_rel_error),
            "scale": json_float(self.scale),
            "scaled_error": json_float(self.scaled_error),
            "tolerance": self.tolerance,
            "row_bound": None if self.row_judge is None else self.row_judge.to_dict(),
            "detail": self.detail,
        }


def json_float(value: float) -> float | None:
    """``value`` for JSON, which has no inf or NaN: None where it is not finite."""
    return value if math.isfinite(value) else None


def compare_layer(
    tensor: ExposedTensor,
    actual: Any,
    expected: Any | None,
    *,
    tolerance: float,
    row_judge: Judge | None = None,
    module: ModuleRef | None = None,
    scale: float | None = None,
) -> LayerResult:
    """One tensor against its reference (None: it has none, and is reported so), judged at
    ``scale`` where given (the golden layers record one for a convolution whose bias carries a
    folded constant: its module's own output's RMS), else the reference's RMS."""
    result = LayerResult(tensor, module, NO_REFERENCE, tolerance, row_judge)
    if expected is None:
        return result
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    broken = dict(
        status=FAILED,
        shape=a.shape,
        max_abs_error=math.inf,
        max_rel_error=math.inf,
        scaled_error=math.inf,
    )
    if a.shape != e.shape:
        return dataclasses.replace(
            result, **broken, detail=f"shape {list(a.shape)}, the reference's {list(e.shape)}"
        )
    if a.size == 0:
        return dataclasses.replace(result, status=PASSED, shape=a.shape)
    if not np.isfinite(e).all():
        return dataclasses.replace(result, **broken, detail="non-finite values in the reference")
    if scale is None:
        scale = float(np.sqrt(np.mean(np.square(e))))
    if not np.isfinite(a).all():
        return dataclasses.replace(result, **broken, scale=scale, detail="non-finite values")
    diff = np.abs(a - e)
    max_abs = float(diff.max())
    significant = (np.abs(e) >= _SIGNIFICANT * scale) & (e != 0)
    max_rel = (
        float((diff[significant] / np.abs(e[significant])).max()) if significant.any() else 0.0
    )
    scaled = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    if row_judge is not None:
        ok = bool(row_judge.check(a.reshape(len(a), -1), e.reshape(len(e), -1)))
    else:
        ok = scaled <= tolerance
    return dataclasses.replace(
        result,
        status=PASSED if ok else FAILED,
        shape=a.shape,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        scale=scale,
        scaled_error=scaled,
        detail="" if scale > 0 else "the reference is all zeros",
    )
