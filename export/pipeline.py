"""The way from an ``nn.Module`` to a bundle, and from any ONNX file to a lowered one.

``export_bundle`` (the Python API): eval -> probe the output -> torch.onnx.export -> full ONNX
check -> onnxsim (verified) -> GAP lowering (verified, `onnxedge.export.lowering`) -> ORT-CPU vs
PyTorch -> `onnxedge check` -> golden data -> bundle. ``export_model`` (`onnxedge export`): build
a registered model or a user's factory, load its weights, then ``export_bundle``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxedge.export.arguments import (
    check_budget,
    check_golden_batch_sizes,
    check_names,
    check_overrides,
    check_shape,
)
from onnxedge.export.exporter import (
    DEFAULT_OPSET,
    check_opset,
    export_module,
    graph_opset,
    rename_output,
)
from onnxedge.export.lowering import LoweringResult, Progress, lower_graph
from onnxedge.export.simplify import symbolic_dims
from onnxedge.export.verify import StepVerification, verify_against_torch
from onnxedge.models.loader import is_factory_reference
from onnxedge.models.registry import get_model_spec, image_preprocessing
from onnxedge.runtime.bundle.lock import bundle_lock
from onnxedge.runtime.bundle.outputs import OUTPUT_NAMES, output_kind_of
from onnxedge.runtime.bundle.reader import MODEL
from onnxedge.runtime.bundle.write import BundleWriter
from onnxedge.runtime.check.check import CheckReport, graph_inputs
from onnxedge.runtime.check.head import find_head, tensor_ranks
from onnxedge.runtime.deps import onnxruntime_version, package_version
from onnxedge.runtime.errors import OnnxEdgeError, first_line, found_at
from onnxedge.runtime.parity import DEFAULT_BATCH_SIZES, GOLDEN
from onnxedge.runtime.parity.layers import DEFAULT_GOLDEN_LAYERS_BUDGET_MB, GOLDEN_LAYERS

log = logging.getLogger(__name__)


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
    """What `onnxedge export` asks for: a registered model, or a factory (``pkg.module:factory``
    or ``path/to/file.py:factory``) called with ``model_args``."""

    model: str = "smile_cnn"
    head: str | None = None
    exporter: str = "dynamo"
    opset: int = DEFAULT_OPSET
    checkpoint: Path | None = None
    seed: int = 0
    out: Path = Path("build/smile_cnn")
    images: Path | None = None  # real images for the golden data (`onnxedge export --images`)
    model_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    input_shape: tuple[int, int, int] | None = None  # C, H, W; a registered model has its own
    labels: Sequence[str] | None = None  # class names (`--labels FILE`)
    preprocessing: Mapping[str, Any] | None = None  # overrides of the default preprocessing
    dynamic_spatial: bool = False
    golden_layers: bool = True  # `--golden-layers/--no-golden-layers`
    golden_layers_budget_mb: float = DEFAULT_GOLDEN_LAYERS_BUDGET_MB
    gap: str | None = None  # `--gap head|all`; None: the lowering's default (head)
    replace: bool = True  # False: `--force` not given (`BundleWriter`'s 4.)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """A written bundle: where, its manifest, what the graph steps did, and every verification."""

    out: Path
    manifest: dict[str, Any]
    lowering: LoweringResult
    verifications: tuple[StepVerification, ...]
    output_kind: str
    exported_pool: str = ""  # the head's pooling op as the exporter wrote it, before the lowering

    @property
    def rewrites(self) -> tuple[str, ...]:
        return self.lowering.rewrites

    @property
    def check(self) -> CheckReport:
        return self.lowering.check


def _one_writer(export: Callable[..., ExportResult]) -> Callable[..., ExportResult]:
    """``export`` with the writer lock of its ``out`` held throughout (`bundle_lock`): a second
    export or optimize to the same bundle waits for it, or says who holds it."""

    @functools.wraps(export)
    def locked(*args: Any, out: str | Path, **kwargs: Any) -> ExportResult:
        with bundle_lock(out):
            return export(*args, out=out, **kwargs)

    return locked


@_one_writer
def export_bundle(
    module: Any,
    *,
    input_shape: Sequence[int],
    out: str | Path,
    exporter: str = "dynamo",
    opset: int | None = None,
    labels: Sequence[str] | Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    golden_inputs: str | Path | np.ndarray | None = None,
    dynamic_spatial: bool = False,
    name: str | None = None,
    weights: Any = None,
    model_info: Mapping[str, Any] | None = None,
    golden_batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    golden_layers: bool = True,
    golden_layers_budget_mb: float = DEFAULT_GOLDEN_LAYERS_BUDGET_MB,
    progress: Progress | None = None,
    gap: str | None = None,
    replace: bool = True,
) -> ExportResult:
    """Export an ``nn.Module`` image classifier to a bundle directory, written atomically.

    The module takes ``[batch, *input_shape]`` (C, H, W; C = 3, or 1 for grayscale) and returns
    ``[batch, K]``: one sigmoid probability, one logit, K logits or K softmax probabilities
    (`onnxedge.runtime.outputs`). The steps: torch.onnx.export (``exporter``, ``opset``, default
    18), the full ONNX check, onnxsim and the GAP lowering, each verified under ONNX Runtime;
    the graph against PyTorch (also at a second H x W with ``dynamic_spatial``); `onnxedge
    check`; golden data for `onnxedge parity` (``golden_inputs``: a directory of images, or
    preprocessed float32 inputs [N, C, H, W], added to the synthetic ones); the manifest.

    ``labels``: class names (K of them; for one output, the negative and the positive class), or
    the manifest's labels block. ``preprocessing``: keys that replace those of the default
    (`onnxedge.models.registry.image_preprocessing`). ``name``, ``weights`` (a
    `WeightsProvenance`) and ``model_info`` (``head``, ``factory``, ``model_args``) are recorded.
    ``golden_batch_sizes``: the batch sizes of the golden data (parity's rows).
    ``golden_layers``: also store golden layers (`onnxedge.export.layers`), for the largest golden
    batch that fits ``golden_layers_budget_mb``; the map from tensors to modules is stored always.
    ``gap``: ``head`` lowers the classifier head's global mean only, ``all`` every one.
    ``replace``: False where ``out`` must still be missing or empty when the bundle is written
    (`BundleWriter`'s 4.: ``--force`` not given).
    """
    from onnxedge.export.golden import make_golden
    from onnxedge.export.layers import carry_modules, make_golden_layers, tensor_modules

    say = progress or (lambda _msg: None)
    shape = _input_shape(check_shape(input_shape))
    opset = DEFAULT_OPSET if opset is None else int(opset)
    check_opset(exporter, opset)
    labels = check_names(labels)
    golden_batch_sizes = check_golden_batch_sizes(golden_batch_sizes)
    golden_layers_budget_mb = check_budget(golden_layers_budget_mb, "golden_layers_budget_mb")
    overrides = check_overrides(preprocessing)
    if shape[0] == 1:  # a grayscale model: PIL's "L" pixels, as import takes one
        overrides.setdefault("color", "L")
    spec = image_preprocessing(shape[1], shape[2], **overrides)
    if (spec["color"] == "L") != (shape[0] == 1):
        raise OnnxEdgeError(
            f"the model takes {shape[0]} channel(s); expected preprocessing color "
            f"{'L' if shape[0] == 1 else 'RGB'}, found {spec['color']}"
        )
    if not dynamic_spatial and list(spec["resize"]) != list(shape[1:]):
        raise OnnxEdgeError(
            f"the preprocessing resizes to {spec['resize']}, the model's input is {list(shape)}: "
            "expected the same H, W (or --dynamic-spatial)"
        )
    images_dir, arrays = _golden_source(golden_inputs, shape)
    BundleWriter(out).check_target()  # before the slow part, not after it

    module.eval()
    classes = probe_classes(module, shape)
    labels_block = labels_for(labels, classes)
    say(f"exporting with the {exporter} exporter at opset {opset}")
    exported = export_module(
        module, shape, exporter=exporter, opset=opset, dynamic_spatial=dynamic_spatial
    )
    kind = output_kind_of(exported, classes)
    exported = rename_output(exported, OUTPUT_NAMES[kind])
    exported_pool = _head_pools(exported)
    modules = tensor_modules(exported, module)  # before onnxsim drops the node metadata
    lowering = lower_graph(exported, progress=say, gap=gap)
    say("comparing ONNX Runtime (CPU) with PyTorch")
    torch_steps = [verify_against_torch(module, lowering.model)]
    if dynamic_spatial:
        other = (shape[1] + 32, shape[2] + 64)
        probe_classes(module, (shape[0], *other))
        torch_steps.append(
            verify_against_torch(
                module,
                lowering.model,
                spatial=other,
                step=f"dynamic H x W at {other[0]}x{other[1]}",
            )
        )
    for step in torch_steps:
        step.raise_if_failed()
    if not lowering.check:
        (first, *_) = lowering.check.failures
        raise OnnxEdgeError(f"the exported graph fails onnxedge check, no bundle written: {first}")
    say("computing the golden data for `onnxedge parity`")
    golden = make_golden(
        module,
        lowering.model,
        spec,
        kind=kind,
        images_dir=images_dir,
        arrays=arrays,
        batch_sizes=golden_batch_sizes,
    )
    say("computing the golden layers for `onnxedge parity --localize`")
    layers = make_golden_layers(
        module,
        lowering.model,
        carry_modules(modules, lowering.model),
        golden.inputs,
        budget_mb=golden_layers_budget_mb if golden_layers else None,
    )

    verifications = (*lowering.verifications, *torch_steps)
    io = io_spec(lowering.model)
    io["output"]["kind"] = kind
    manifest: dict[str, Any] = {
        "model": name or type(module).__name__,
        **dict(model_info or {}),
        "exporter": exporter,
        "opset": graph_opset(lowering.model),
        **io,
        "preprocessing": spec,
        "labels": labels_block,
        "weights": _weights_block(weights),
        "graph": {
            "nodes": [n.op_type for n in lowering.model.graph.node],
            "gap_scope": lowering.gap_scope,
            "gap_rewrites": list(lowering.rewrites),
            "verified_steps": [v.to_dict() for v in verifications],
        },
        "check": lowering.check.to_dict(),
        "versions": package_versions(),
    }
    data = lowering.model.SerializeToString(deterministic=True)
    say(f"writing the bundle to {out}")
    with BundleWriter(out, replace=replace) as writer:
        writer.write_bytes(MODEL, data)  # its sha256 goes into the manifest's "files"
        writer.write_bytes(GOLDEN, golden.data)
        manifest["golden"] = golden.manifest_block()
        if layers.data is not None:
            writer.write_bytes(GOLDEN_LAYERS, layers.data)
        manifest["layers"] = layers.block
        writer.manifest.update(manifest)
    return ExportResult(
        out=Path(out),
        manifest=writer.manifest,
        lowering=lowering,
        verifications=verifications,
        output_kind=kind,
        exported_pool=exported_pool,
    )


def export_model(request: ExportRequest, progress: Progress | None = None) -> ExportResult:
    """`onnxedge export`: build the registered model or the factory's, load its weights, and
    `export_bundle` it."""
    from onnxedge.models.weights import load_checkpoint, read_checkpoint_info, seeded

    say = progress or (lambda _msg: None)
    check_opset(request.exporter, request.opset)
    if request.checkpoint is not None and not Path(request.checkpoint).is_file():
        raise OnnxEdgeError(f"expected a checkpoint file, found {found_at(request.checkpoint)}")
    # A checkpoint from `onnxedge train` says its head, labels and preprocessing; what the request
    # sets explicitly still wins.
    trained = read_checkpoint_info(request.checkpoint) if request.checkpoint else None
    if request.images is not None and not Path(request.images).is_dir():
        raise OnnxEdgeError(
            f"--images: expected a directory of images, found no directory at {request.images}"
        )
    BundleWriter(request.out).check_target()  # before the slow part, not after it

    if is_factory_reference(request.model):
        from onnxedge.models.loader import build_module

        if request.head is not None:
            raise OnnxEdgeError("--head applies to registered models; pass --model-arg instead")
        if request.input_shape is None:
            raise OnnxEdgeError(f"--model {request.model} needs --input-shape C,H,W")
        say(f"building {request.model}")
        module, provenance = seeded(
            lambda: build_module(request.model, request.model_args), request.seed
        )
        input_shape = tuple(request.input_shape)
        name = request.model
        info: dict[str, Any] = {"factory": request.model, "model_args": dict(request.model_args)}
        preprocessing = dict(request.preprocessing or {})
        labels: Any = request.labels
    else:
        if trained is not None and trained.model != request.model:
            raise OnnxEdgeError(
                f"the checkpoint {request.checkpoint} was trained as model {trained.model!r}; "
                f"expected --model {trained.model}, found {request.model!r}"
            )
        spec = get_model_spec(request.model)
        chosen = trained.head if request.head is None and trained else request.head
        head = spec.resolve_head(chosen)
        if request.model_args:
            raise OnnxEdgeError(
                f"--model-arg applies to a factory (module:factory), not the registered "
                f"{spec.name!r}"
            )
        if request.input_shape is not None and tuple(request.input_shape) != spec.input_shape:
            raise OnnxEdgeError(
                f"{spec.name} takes input {list(spec.input_shape)}, found --input-shape "
                f"{list(request.input_shape)}"
            )
        say(f"building {spec.name} (head {head})")
        module, provenance = seeded(lambda: spec.build(head), request.seed)
        input_shape = spec.input_shape
        name = spec.name
        info = {"head": head}
        preprocessing = {**spec.preprocessing, **dict(request.preprocessing or {})}
        labels = request.labels if request.labels is not None else dict(spec.labels)
        if trained is not None:
            info["training"] = trained.summary()
            preprocessing = {**dict(trained.preprocessing), **dict(request.preprocessing or {})}
            labels = request.labels if request.labels is not None else dict(trained.labels)
    if request.checkpoint is not None:
        provenance = load_checkpoint(module, request.checkpoint)
    return export_bundle(
        module,
        input_shape=input_shape,
        out=request.out,
        exporter=request.exporter,
        opset=request.opset,
        labels=labels,
        preprocessing=preprocessing,
        golden_inputs=request.images,
        dynamic_spatial=request.dynamic_spatial,
        golden_layers=request.golden_layers,
        golden_layers_budget_mb=request.golden_layers_budget_mb,
        name=name,
        weights=provenance,
        model_info=info,
        progress=say,
        gap=request.gap,
        replace=request.replace,
    )


def _head_pools(model: onnx.ModelProto) -> str:
    """The op types of the pools `find_head` finds in ``model`` ("" where the walk finds none)."""
    try:
        head = find_head(model.graph, tensor_ranks(model))
    except OnnxEdgeError:
        return ""
    return "+".join(p.op_type for p in head.pools)


def _input_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(shape)
    if len(dims) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise OnnxEdgeError(f"expected the input shape as C, H, W (three integers), found {dims}")
    if any(d < 1 for d in dims):
        raise OnnxEdgeError(f"expected a positive input shape C, H, W, found {list(dims)}")
    if dims[0] not in (1, 3):
        raise OnnxEdgeError(
            f"expected 3 input channels (RGB images) or 1 (grayscale), as the runtime "
            f"preprocesses them, found input shape {list(dims)}"
        )
    return dims  # type: ignore[return-value]


def probe_classes(module: Any, input_shape: Sequence[int]) -> int:
    """Run ``module`` on a zero batch of 2; the K of its ``[batch, K]`` output, or one line saying
    why the model does not fit (it rejects the shape, returns a tuple or another shape)."""
    import torch

    shape = [2, *input_shape]
    try:
        with torch.no_grad():
            out = module(torch.zeros(shape))
    except Exception as e:
        raise OnnxEdgeError(
            f"the model rejects an input of shape {shape}: {type(e).__name__}: {first_line(e)}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise OnnxEdgeError(
            f"expected the model to return one tensor [batch, K], found a {type(out).__name__}"
        )
    if out.dim() != 2 or out.shape[0] != 2:
        raise OnnxEdgeError(
            f"expected the model's output as [batch, K] (class scores per image), found "
            f"{list(out.shape)} for an input of shape {shape}"
        )
    if not out.is_floating_point():
        raise OnnxEdgeError(f"expected a floating-point output, found {out.dtype}")
    return int(out.shape[1])


def labels_for(labels: Sequence[str] | Mapping[str, Any] | None, classes: int) -> dict[str, Any]:
    """The manifest's labels block for a model with ``classes`` outputs.

    One output: ``{"threshold": 0.5, "positive": ..., "negative": ...}`` (names given as
    [negative, positive]). K outputs: ``{"classes": [K names]}``, class_0 ... by default.
    """
    if isinstance(labels, Mapping):
        block = dict(labels)
        names = block.get("classes")
        if classes > 1 and (not isinstance(names, list) or len(names) != classes):
            raise OnnxEdgeError(
                f"expected labels with {classes} class names for {classes} outputs, found {block}"
            )
        return block
    if classes == 1:
        names = list(labels) if labels is not None else ["negative", "positive"]
        if len(names) != 2:
            raise OnnxEdgeError(
                f"expected 2 class names (negative, then positive) for a model with one output, "
                f"found {len(names)}"
            )
        return {"threshold": 0.5, "positive": str(names[1]), "negative": str(names[0])}
    names = list(labels) if labels is not None else [f"class_{i}" for i in range(classes)]
    if len(names) != classes:
        raise OnnxEdgeError(
            f"expected {classes} class names (the model outputs {classes} scores), found "
            f"{len(names)}"
        )
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise OnnxEdgeError(f"expected distinct class names, found {duplicate!r} twice")
    return {"classes": [str(n) for n in names]}


def _golden_source(
    source: str | Path | np.ndarray | None, shape: tuple[int, int, int]
) -> tuple[Path | None, np.ndarray | None]:
    if source is None:
        return None, None
    if isinstance(source, np.ndarray):
        if source.ndim != 4 or tuple(source.shape[1:]) != shape or source.dtype != np.float32:
            raise OnnxEdgeError(
                f"golden_inputs: expected float32 [N, {', '.join(map(str, shape))}], found "
                f"{source.dtype} {list(source.shape)}"
            )
        if not np.isfinite(source).all():
            raise OnnxEdgeError("golden_inputs: expected finite values, found NaN or inf")
        return None, source
    if not Path(source).is_dir():
        raise OnnxEdgeError(
            f"--images: expected a directory of images, found no directory at {source}"
        )
    return Path(source), None


def _weights_block(weights: Any) -> dict[str, Any]:
    if weights is None:
        return {"source": "module"}  # the weights the module had when it was passed in
    if isinstance(weights, Mapping):
        return dict(weights)
    return weights.to_dict()
