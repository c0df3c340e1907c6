"""What golden layers cost and whether they hold: torch-free, so that `onnxedge export`'s layers
(`onnxedge.export.layers`, PyTorch's) and `onnxedge import`'s (onnx's float64 evaluator) are sized
and verified by the same code."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from onnxedge.runtime.engines.onnxruntime.session import make_session
from onnxedge.runtime.parity.exposed import ExposedTensor, expose_intermediates, run_exposed
from onnxedge.runtime.parity.layer_compare import TensorRecords, compare_layer, layer_tolerance
from onnxedge.runtime.parity.rows import PASSED
from onnxedge.runtime.parity.tolerances import CPU_ROUNDING_FACTOR, DEFAULT_TOLERANCES

__all__ = ["bytes_per_row", "golden_block", "verified_layers"]

log = logging.getLogger(__name__)


def bytes_per_row(layers: Mapping[str, np.ndarray]) -> int:
    """Bytes a batch row's layers take as float32 (the file deflates them; their inputs are the
    golden data's)."""
    return sum(4 * int(np.prod(a.shape[1:])) for a in layers.values())


def verified_layers(
    final: onnx.ModelProto,
    inputs: np.ndarray,
    layers: Mapping[str, np.ndarray],
    scales: Mapping[str, float] | None = None,
    float32_errors: Mapping[str, float] | None = None,
    sequence_errors: Mapping[str, float] | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The layers that ONNX Runtime's CPU run of ``final`` matches within the CPU's layer bound
    (`layer_bound`: at the scale ``scales`` gives a tensor, else its own RMS, widened to the CPU
    factor times PyTorch's own float32 error ``float32_errors`` where known, and to
    `SEQUENCE_FACTOR` times ``sequence_errors``, its error with global means summed in sequence),
    and the names of those it does not."""
    exposed, tensors, _ = expose_intermediates(final)
    session = make_session(exposed.SerializeToString())
    actual = run_exposed(session, final.graph.input[0].name, inputs)
    rtol = DEFAULT_TOLERANCES[("cpu", None)][1].rtol
    max_depth = max((t.depth for t in tensors), default=1)
    by_name: dict[str, ExposedTensor] = {t.name: t for t in tensors}
    records = TensorRecords(scales or {}, float32_errors or {}, sequence_errors or {})
    kept, dropped = {}, []
    for name, array in layers.items():
        t = by_name.get(name)
        scale = records.scales.get(name)
        tolerance = records.bound(
            name,
            layer_tolerance(rtol, t.depth if t else 1, max_depth),
            array,
            CPU_ROUNDING_FACTOR,
        )
        result = (
            None
            if t is None
            else compare_layer(t, actual[name], array, tolerance=tolerance, scale=scale)
        )
        if result is not None and result.status == PASSED:
            kept[name] = array
        else:
            log.warning("golden layers: %s does not match ONNX Runtime's value; left out", name)
            dropped.append(name)
    return kept, dropped


def golden_block(
    name: str, batch: int, tensors: int, data: bytes, budget_mb: float, dropped: list[str]
) -> dict[str, Any]:
    """The manifest's ``layers.golden`` block of a stored golden layers file ``name``."""
    return {
        "file": name,
        "batch_sizes": [batch],
        "tensors": tensors,
        "bytes": len(data),
        "budget_mb": budget_mb,
        "not_matching_onnx": dropped,
    }
