"""The golden data of `onnxedge import` (`onnxedge.export.importer`): the golden rows made as
`onnxedge export` makes them, the reference's outputs on them, whose truth is the original file
run by `onnxedge.export.onnx_reference`, and the golden layers for `onnxedge parity --localize`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxedge.export.onnx_reference import FLOAT64, OnnxReference, disagreement
from onnxedge.runtime.bundle.outputs import (
    LOGIT,
    LOGITS,
    centred_logits,
    probabilities,
)
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity import (
    GOLDEN_FORMAT,
    GOLDEN_SEED,
    GOLDEN_VERSION,
    STRUCTURED_KINDS,
    Reference,
    ReferenceBatch,
    golden_inputs,
    golden_npz_bytes,
)
from onnxedge.runtime.parity.layers import (
    GOLDEN_LAYERS,
    golden_layers_npz_bytes,
)
from onnxedge.runtime.parity.rounding import reference_rounding


@dataclasses.dataclass(frozen=True)
class ImportedGolden:
    """``golden.npz``'s bytes and the manifest's ``golden`` block."""

    data: bytes
    block: dict[str, Any]
    disagreement: str = ""  # where the float64 reference and ONNX Runtime's float32 run differ


def golden_rows(
    spec: Mapping[str, Any], images: str | Path | None, batch_sizes: Sequence[int]
) -> tuple[dict[int, tuple[np.ndarray, tuple[str, ...]]], list[str]]:
    """The golden inputs of each batch size, as `onnxedge export` makes them: structured, the
    real images that fit, random rows; and the image files skipped, with their reasons."""
    from onnxedge.export.images import read_images

    found: list[tuple[str, np.ndarray]] = []
    skipped: list[str] = []
    if images is not None:
        room = max(batch_sizes) - 1 - len(STRUCTURED_KINDS)
        if room < 1:
            raise OnnxEdgeError(
                f"--images: the largest golden batch ({max(batch_sizes)}) has no room for images"
            )
        found, skipped = read_images(images, spec, limit=room)
    rows = {
        size: golden_inputs(size, spec, images=found, seed=GOLDEN_SEED)
        for size in sorted(set(batch_sizes))
    }
    return rows, skipped


def imported_golden(
    ref: OnnxReference,
    spec: Mapping[str, Any],
    rows: Mapping[int, tuple[np.ndarray, tuple[str, ...]]],
    kind: str,
    final: onnx.ModelProto,
    skipped: Sequence[str],
) -> ImportedGolden:
    """``golden.npz``: the reference's outputs on the golden rows, float64 (the truth, as
    computed by ``ref``) and float32 (ONNX Runtime CPU on the original)."""
    from onnxedge.runtime.bundle.outputs import logits_tensor

    batches = {}
    for size, (inputs, kinds) in rows.items():
        prob, logits = _outputs(ref.run(inputs), kind)
        prob32, logits32 = _outputs(ref.run_f32(inputs), kind)
        batches[size] = ReferenceBatch(
            inputs=inputs,
            kinds=kinds,
            prob=prob.astype(np.float64),
            logits=logits.astype(np.float64),
            prob_f32=prob32.astype(np.float32),
            logits_f32=logits32.astype(np.float32),
        )
    logits_name = logits_tensor(final, kind)
    reference = Reference(
        source="golden",
        description=ref.description,
        preprocessing=dict(spec),
        batches=batches,
        logits_name=logits_name,
        seed=GOLDEN_SEED,
    )
    names = [k.removeprefix("image:") for k in rows[max(rows)][1] if k.startswith("image:")]
    meta = {
        "format": GOLDEN_FORMAT,
        "format_version": GOLDEN_VERSION,
        "batch_sizes": list(reference.batch_sizes),
        "seed": GOLDEN_SEED,
        "preprocessing": dict(spec),
        "logits": logits_name,
        "output_kind": kind,
        "reference": ref.description,
        "reference_precision": ref.precision,
        "images": names,
    }
    if ref.precision != FLOAT64 and ref.run_f32_unfused is not None:
        meta["float32_spread"] = _float32_spread(ref, batches[max(batches)], kind)
    block = {
        "format": GOLDEN_FORMAT,
        "format_version": GOLDEN_VERSION,
        "batch_sizes": list(reference.batch_sizes),
        "inputs": sorted({k for _, kinds in rows.values() for k in kinds}),
        "seed": GOLDEN_SEED,
        "images": names,
        "images_skipped": list(skipped),
        "logits": logits_name,
        "reference": ref.description,
        "reference_precision": ref.precision,
    }
    return ImportedGolden(
        data=golden_npz_bytes(reference, meta),
        block=block,
        disagreement=_disagreement(ref, batches, kind) if ref.precision == FLOAT64 else "",
    )


def _float32_spread(ref: OnnxReference, batch: ReferenceBatch, kind: str) -> dict[str, Any]:
    """A float32 reference's own spread on ``batch`` (the largest): each output's largest
    distance from ONNX Runtime's run without graph optimizations (other kernels, no fusions;
    logits centred as parity compares them). Parity holds no engine nearer the reference than
    `SPREAD_FACTOR` times it (`onnxedge.runtime.parity.rounding`)."""
    assert ref.run_f32_unfused is not None
    prob, logits = _outputs(ref.run_f32_unfused(batch.inputs), kind)
    logits, reference = centred_logits(logits, kind), centred_logits(batch.logits, kind)
    return {  # the largest |difference|, inf where one is not finite
        "prob": reference_rounding([batch.prob], [prob]).float32_error,
        "logits": reference_rounding([reference], [logits]).float32_error,
        "runs": ["ONNX Runtime CPU without graph optimizations"],
    }


def _disagreement(ref: OnnxReference, batches: Mapping[int, ReferenceBatch], kind: str) -> str:
    """`disagreement` of the float64 and float32 columns, with ``ref``'s unfused float32 run as
    the second sample, batch by batch (a kernel that mixes rows shows at one batch size and not
    another); "" where every batch agrees."""
    unfused = ref.run_f32_unfused or ref.run_f32
    for size, batch in sorted(batches.items()):
        prob, logits = _outputs(unfused(batch.inputs), kind)
        outputs = [("logits", batch.logits, batch.logits_f32, logits)]
        if kind not in (LOGIT, LOGITS):
            outputs.insert(0, ("probabilities", batch.prob, batch.prob_f32, prob))
        found = disagreement(outputs, batch.kinds)
        if found:
            return f"at batch {size}, {found}"
    return ""


def imported_golden_layers(
    ref: OnnxReference,
    final: onnx.ModelProto,
    rows: Mapping[int, tuple[np.ndarray, tuple[str, ...]]],
    budget_mb: float | None,
) -> tuple[bytes | None, dict[str, Any]]:
    """``golden_layers.npz`` of an imported model and the manifest's ``layers`` block (no module
    map: localize names ONNX nodes). The layers are every floating-point tensor of the bundle's
    graph (after onnxsim, the batch and the GAP lowering), computed by onnx's reference
    evaluator in float64 and checked against ONNX Runtime's CPU run of the same graph."""
    from onnxedge.export.layers_verify import bytes_per_row, golden_block, verified_layers
    from onnxedge.export.onnx_reference import FLOAT64, layer_runner

    block: dict[str, Any] = {"modules": {}}
    if budget_mb is None:
        block["golden"] = {"file": None, "reason": "--no-golden-layers was given"}
        return None, block
    if ref.precision != FLOAT64:
        block["golden"] = {
            "file": None,
            "reason": f"the reference is ONNX Runtime in float32 ({ref.reason}); localize "
            "compares with another provider or variant (--against)",
        }
        return None, block
    run = layer_runner(final)
    first = rows[min(rows)][0]
    per_row = bytes_per_row(run(first))
    fitting = [b for b in rows if b * per_row <= budget_mb * 1e6]
    if not fitting:
        block["golden"] = {
            "file": None,
            "reason": f"{per_row / 1e6:.1f} MB a row, over the budget of {budget_mb:g} MB "
            "(--golden-layers-budget)",
        }
        return None, block
    batch = max(fitting)
    inputs = rows[batch][0]
    layers, dropped = verified_layers(final, inputs, run(inputs))
    tensors = tuple(t for n in final.graph.node for t in n.output if t in layers)
    description = f"{ref.description}, the bundle's graph, stored as float32"
    data = golden_layers_npz_bytes(tensors, {batch: layers}, reference=description)
    block["golden"] = golden_block(GOLDEN_LAYERS, batch, len(tensors), data, budget_mb, dropped)
    return data, block


def _outputs(found: list[np.ndarray], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, logits) of one reference run: [output] or [output, logits tensor]."""
    output = np.asarray(found[0])
    if kind in (LOGIT, LOGITS):
        return probabilities(output, kind), output
    return output, np.asarray(found[1]).reshape(output.shape)
