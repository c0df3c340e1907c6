"""The graph steps every exported model goes through, and any ONNX file exported elsewhere:
onnxsim, a fixed batch made symbolic (for an imported model), then the GAP lowering, each
verified numerically against its input graph under ONNX Runtime. ``lower_graph`` is the step of
`onnxedge.export.pipeline.export_bundle` and of `onnxedge import`; ``simplify_file`` (`onnxedge
simplify`) runs it on a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import onnx

from onnxedge.export.annotations import drop_contradicted_annotations
from onnxedge.export.simplify import simplify_model
from onnxedge.export.verify import StepVerification, verify_batch_step, verify_onnx_step
from onnxedge.runtime.bundle.write import atomic_write_bytes
from onnxedge.runtime.check.check import CheckReport, check_model, load_model
from onnxedge.runtime.errors import OnnxEdgeError, first_line

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class LoweringResult:
    """What the graph steps did to one model."""

    model: onnx.ModelProto
    rewrites: tuple[str, ...]
    verifications: tuple[StepVerification, ...]
    check: CheckReport
    batch_rewrites: tuple[str, ...] = ()  # what made a fixed batch symbolic (`dynamic_batch`)
    gap_scope: str = ""  # which global means the lowering rewrote: head or all
    annotations_dropped: tuple[str, ...] = ()  # value_info the graph contradicts (simplify_file)


def lower_graph(
    model: onnx.ModelProto,
    *,
    simplify: bool = True,
    dynamic_batch: bool = False,
    progress: Progress | None = None,
    gap: str | None = None,
) -> LoweringResult:
    """onnxsim, then (``dynamic_batch``, for an input whose batch is fixed) the batch made
    symbolic, then the GAP lowering (``gap``: the head's pool, or every global mean); each step
    verified numerically, the batch step against the original ``model`` at batch 1, 2 and 7."""
    from onnxedge.export.gap import DEFAULT_GAP_SCOPE, canonicalize_gap_head

    say = progress or (lambda _msg: None)
    verifications = []
    original = model
    if simplify:
        say("simplifying with onnxsim")
        simplified = simplify_model(model)
        step = verify_onnx_step("onnxsim", model, simplified)
        step.raise_if_failed()
        verifications.append(step)
        model = simplified
    batch_rewrites: tuple[str, ...] = ()
    if dynamic_batch:
        model, batch_rewrites, step = _make_batch_dynamic(original, model, say)
        verifications.append(step)
    say("lowering the GAP head to GlobalAveragePool")
    lowering = canonicalize_gap_head(model, gap or DEFAULT_GAP_SCOPE)
    if lowering.modified:
        step = verify_onnx_step("GAP lowering", model, lowering.model)
        step.raise_if_failed()
        verifications.append(step)
    lowered = lowering.model
    return LoweringResult(
        model=lowered,
        rewrites=tuple(str(r) for r in lowering.rewrites),
        gap_scope=gap or DEFAULT_GAP_SCOPE,
        verifications=tuple(verifications),
        check=check_model(lowered),
        batch_rewrites=batch_rewrites,
    )


def _make_batch_dynamic(
    original: onnx.ModelProto, model: onnx.ModelProto, say: Progress
) -> tuple[onnx.ModelProto, tuple[str, ...], StepVerification]:
    """``model`` with its fixed batch made symbolic, verified against ``original``; one line
    naming the node that pins the batch where that cannot be done."""
    from onnxedge.export.batch import make_batch_dynamic

    say("making the fixed batch dynamic")
    batch = make_batch_dynamic(model)
    if batch.pinned_by:
        raise OnnxEdgeError(
            f"the input's batch is fixed at {batch.fixed} and cannot be made dynamic: "
            f"{batch.pinned_by}"
        )
    step = verify_batch_step(original, batch.model, batch.fixed)
    if not step:
        (batch_size, worst), *_ = [(b, c) for b, c in step.comparisons if not c]
        raise OnnxEdgeError(
            f"the input's batch is fixed at {batch.fixed}; made dynamic (rewrote "
            f"{len(batch.rewrites)} node(s)) it no longer computes the original at batch "
            f"{batch_size}: max abs error {worst.max_abs_error:.3g}"
            + (f" ({worst.detail})" if worst.detail else "")
            + _foreign_ops(model)
        )
    return batch.model, batch.rewrites, step


def _foreign_ops(model: onnx.ModelProto) -> str:
    """Where the graph holds ops outside the ONNX standard (ONNX Runtime's ``com.microsoft``
    FusedConv of a graph it saved after optimizing it), which shape inference cannot follow to
    the node that pins the batch: the words that say so, else ""."""
    foreign = sorted(
        {f"{n.domain} {n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")}
    )
    if not foreign:
        return ""
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return (
        f"; the graph holds ops outside the ONNX standard ({shown}), which shape inference "
        "cannot follow to the node that fixes the batch: import the model as exported, before "
        "a runtime optimized it, or give it a dynamic batch"
    )


def simplify_file(
    src: Path,
    dst: Path,
    *,
    simplify: bool = True,
    progress: Progress | None = None,
    gap: str | None = None,
) -> LoweringResult:
    """onnxsim and the GAP lowering for any ONNX model, its shape annotations that the graph
    contradicts dropped first (`drop_contradicted_annotations`); the result is written
    atomically."""
    model = load_model(src)
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as e:
        raise OnnxEdgeError(f"{src} is not a valid ONNX model: {first_line(e)}") from None
    model, dropped = drop_contradicted_annotations(model)
    result = lower_graph(model, simplify=simplify, progress=progress, gap=gap)
    atomic_write_bytes(dst, result.model.SerializeToString(deterministic=True))
    return dataclasses.replace(result, annotations_dropped=dropped)
