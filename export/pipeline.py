"""The way from a registered model to a bundle, and from any ONNX file to a lowered one.

``export_bundle``: build -> weights -> eval -> torch.onnx.export -> full ONNX check -> onnxsim
(verified) -> GAP lowering (verified) -> ORT-CPU vs PyTorch -> `onnxedge check` -> bundle.
``simplify_file``: the same graph steps for an ONNX model exported elsewhere.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from onnxedge.export.exporter import check_opset, export_module, graph_opset
from onnxedge.export.simplify import simplify_model, symbolic_dims
from onnxedge.export.verify import StepVerification, verify_against_torch, verify_onnx_step
from onnxedge.runtime.bundle import MODEL, BundleWriter, atomic_write_bytes
from onnxedge.runtime.check import CheckReport, check_model, graph_inputs, load_model
from onnxedge.runtime.deps import onnxruntime_version, package_version
from onnxedge.runtime.errors import OnnxEdgeError, first_line
from onnxedge.runtime.parity import GOLDEN

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class LoweringResult:
    """What the graph steps did to one model."""

    model: onnx.ModelProto
    rewrites: tuple[str, ...]
    verifications: tuple[StepVerification, ...]
    check: CheckReport


def lower_graph(
    model: onnx.ModelProto, *, simplify: bool = True, progress: Progress | None = None
) -> LoweringResult:
    """onnxsim, then the GAP lowering; each step verified numerically against its input graph."""
    from onnxedge.export.gap import canonicalize_gap_head

    say = progress or (lambda _msg: None)
    verifications = []
    if simplify:
        say("simplifying with onnxsim")
        simplified = simplify_model(model)
        step = verify_onnx_step("onnxsim", model, simplified)
        step.raise_if_failed()
        verifications.append(step)
        model = simplified
    say("lowering the GAP head to GlobalAveragePool")
    gap = canonicalize_gap_head(model)
    if gap.modified:
        step = verify_onnx_step("GAP lowering", model, gap.model)
        step.raise_if_failed()
        verifications.append(step)
    lowered = gap.model
    return LoweringResult(
        model=lowered,
        rewrites=tuple(str(r) for r in gap.rewrites),
        verifications=tuple(verifications),
        check=check_model(lowered),
    )


def package_versions() -> dict[str, str]:
    dists = ("onnxedge", "torch", "onnx", "onnxscript", "onnx-ir", "onnxsim")
    found = {dist: package_version(dist) for dist in dists}
    found["onnxruntime"] = onnxruntime_version()
    return {"python": platform.python_version(), **{k: v for k, v in found.items() if v}}


def io_spec(model: onnx.ModelProto) -> dict[str, Any]:
    dims = symbolic_dims(model)
    dtype = onnx.helper.tensor_dtype_to_np_dtype

    def spec(value: onnx.ValueInfoProto) -> dict[str, Any]:
        return {
            "name": value.name,
            "shape": dims[value.name],
            "dtype": str(dtype(value.type.tensor_type.elem_type)),
        }

    (inp,) = graph_inputs(model.graph)
    (out,) = model.graph.output
    return {"input": spec(inp), "output": spec(out)}


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    model: str = "smile_cnn"
    head: str | None = None
    exporter: str = "dynamo"
    opset: int = 18
    checkpoint: Path | None = None
    seed: int = 0
    out: Path = Path("build/smile_cnn")
    images: Path | None = None  # real images for the golden data (`onnxedge export --images`)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    lowering: LoweringResult


def export_bundle(request: ExportRequest, progress: Progress | None = None) -> ExportResult:
    """Export a registered model to a bundle directory (written atomically)."""
    from onnxedge.export.golden import make_golden
    from onnxedge.models import get_model_spec
    from onnxedge.models.weights import load_checkpoint, seeded

    say = progress or (lambda _msg: None)
    spec = get_model_spec(request.model)
    head = spec.resolve_head(request.head)
    check_opset(request.exporter, request.opset)
    if request.checkpoint is not None and not Path(request.checkpoint).is_file():
        raise OnnxEdgeError(f"expected a checkpoint file, found nothing at {request.checkpoint}")
    if request.images is not None and not Path(request.images).is_dir():
        raise OnnxEdgeError(
            f"--images: expected a directory of images, found no directory at {request.images}"
        )
    BundleWriter(request.out).check_target()  # before the slow part, not after it

    say(f"building {spec.name} (head {head})")
    module, provenance = seeded(lambda: spec.build(head), request.seed)
    if request.checkpoint is not None:
        provenance = load_checkpoint(module, request.checkpoint)
    module.eval()

    say(f"exporting with the {request.exporter} exporter at opset {request.opset}")
    exported = export_module(
        module, spec.input_shape, exporter=request.exporter, opset=request.opset
    )
    lowering = lower_graph(exported, progress=say)
    say("comparing ONNX Runtime (CPU) with PyTorch")
    torch_step = verify_against_torch(module, lowering.model)
    torch_step.raise_if_failed()
    if not lowering.check:
        (first, *_) = lowering.check.failures
        raise OnnxEdgeError(f"the exported graph fails onnxedge check, no bundle written: {first}")
    say("computing the golden data for `onnxedge parity`")
    golden = make_golden(module, lowering.model, spec.preprocessing, images_dir=request.images)

    data = lowering.model.SerializeToString(deterministic=True)
    manifest: dict[str, Any] = {
        "model": spec.name,
        "head": head,
        "exporter": request.exporter,
        "opset": graph_opset(lowering.model),
        **io_spec(lowering.model),
        "preprocessing": dict(spec.preprocessing),
        "labels": dict(spec.labels),
        "weights": provenance.to_dict(),
        "graph": {
            "nodes": [n.op_type for n in lowering.model.graph.node],
            "gap_rewrites": list(lowering.rewrites),
            "verified_steps": [v.to_dict() for v in (*lowering.verifications, torch_step)],
        },
        "check": lowering.check.to_dict(),
        "versions": package_versions(),
    }
    say(f"writing the bundle to {request.out}")
    with BundleWriter(request.out) as writer:
        writer.write_bytes(MODEL, data)  # its sha256 goes into the manifest's "files"
        writer.write_bytes(GOLDEN, golden.data)
        manifest["golden"] = golden.manifest_block()
        writer.manifest.update(manifest)
    return ExportResult(out=Path(request.out), manifest=writer.manifest, lowering=lowering)


def simplify_file(
    src: Path, dst: Path, *, simplify: bool = True, progress: Progress | None = None
) -> LoweringResult:
    """onnxsim and the GAP lowering for any ONNX model; the result is written atomically."""
    model = load_model(src)
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as e:
        raise OnnxEdgeError(f"{src} is not a valid ONNX model: {first_line(e)}") from None
    result = lower_graph(model, simplify=simplify, progress=progress)
    atomic_write_bytes(dst, result.model.SerializeToString(deterministic=True))
    return result
