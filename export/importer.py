"""`onnxedge import`: a bundle of an ONNX image classifier exported elsewhere (PaddlePaddle,
tf2onnx, Keras, an older PyTorch export, a model zoo).

``import_bundle`` (the Python API): the file is read and refused with one line where it is not
a classifier onnxedge can ship (`_inspect`: not ONNX, external data outside its folder, ONNX
Runtime cannot load it, several inputs, an input that is not an image, no ``[N, K]`` output, an
output kind that contradicts the graph); then the graph steps of `onnxedge export` (onnxsim, the
fixed batch made symbolic, the GAP lowering, each verified; `onnxedge check`); then golden data
whose reference is the original file (`onnxedge.export.onnx_reference`: float64 with onnx's
reference evaluator where its ops allow, else ONNX Runtime CPU in float32); then the bundle,
written atomically. Nothing is written where any step fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxedge.export.import_golden import golden_rows, imported_golden, imported_golden_layers
from onnxedge.export.interface import NCHW, NHWC, flatten_output, input_layout, nchw_input
from onnxedge.export.lowering import LoweringResult, lower_graph
from onnxedge.export.onnx_reference import (
    DEFAULT_BUDGET_S,
    FLOAT64,
    OnnxReference,
    float32_reference,
    make_reference,
)
from onnxedge.export.pipeline import io_spec, labels_for
from onnxedge.export.verify import StepVerification, verify_input_layout, verify_output_flatten
from onnxedge.models.registry import image_preprocessing
from onnxedge.runtime.bundle.outputs import (
    LOGIT,
    LOGITS,
    PROBABILITIES,
    SIGMOID_PROBABILITY,
    final_activation,
    output_kind_of,
)
from onnxedge.runtime.bundle.reader import MODEL
from onnxedge.runtime.bundle.write import BundleWriter
from onnxedge.runtime.check.check import graph_inputs
from onnxedge.runtime.errors import OnnxEdgeError, first_line, not_onnx
from onnxedge.runtime.parity import (
    DEFAULT_BATCH_SIZES,
    GOLDEN,
)
from onnxedge.runtime.parity.layers import (
    DEFAULT_GOLDEN_LAYERS_BUDGET_MB,
    GOLDEN_LAYERS,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

# --output-kind: what the user may say the output is where the graph does not say it.
KIND_CHOICES = {
    "probabilities": (PROBABILITIES,),
    "logits": (LOGITS, LOGIT),
    "sigmoid": (SIGMOID_PROBABILITY,),
}
_FLOAT32 = onnx.TensorProto.FLOAT
CHANNELS = (1, 3)


@dataclasses.dataclass(frozen=True)
class ImportedModel:
    """What `_inspect` found in the original file."""

    model: onnx.ModelProto
    sha256: str
    input_name: str
    shape: tuple[int, int, int]  # C, H, W fed (from the graph, or --input-shape where symbolic)
    fixed_batch: int | None  # dim 0 of the input where the file fixes it
    classes: int
    kind: str
    flatten: bool = False  # the output is [N, K, 1, 1]: flattened to [N, K] first
    channels_last: onnx.ModelProto | None = None  # the file, where its input was NHWC


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """A written bundle: where, its manifest, what the graph steps did, and the reference."""

    out: Path
    manifest: dict[str, Any]
    lowering: LoweringResult
    output_kind: str
    reference: OnnxReference

    @property
    def rewrites(self) -> tuple[str, ...]:
        return self.lowering.rewrites

    @property
    def verifications(self) -> tuple[StepVerification, ...]:
        return self.lowering.verifications


def import_bundle(
    src: str | Path,
    *,
    out: str | Path,
    input_shape: Sequence[int] | None = None,
    input_layout: str = "auto",
    preprocessing: Mapping[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    output_kind: str | None = None,
    images: str | Path | None = None,
    reference: str = "auto",
    reference_budget_s: float = DEFAULT_BUDGET_S,
    golden_batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    golden_layers_budget_mb: float | None = DEFAULT_GOLDEN_LAYERS_BUDGET_MB,
    progress: Progress | None = None,
) -> ImportResult:
    """Make a bundle at ``out`` of the ONNX classifier ``src``.

    ``input_shape``: C, H, W, needed where the graph leaves H and W symbolic (and only agreeing
    with it elsewhere). ``input_layout``: ``NCHW``, ``NHWC`` (the input is then made NCHW,
    `onnxedge.export.interface`) or ``auto`` (`input_layout`). ``preprocessing``: keys that replace
    those of the default
    (`onnxedge.models.registry.image_preprocessing`: no crop, resize to H x W, scaled to [0, 1];
    one channel is grayscale). ``labels``: class names. ``output_kind``: ``probabilities``,
    ``logits`` or ``sigmoid``, where the graph does not say (an error where it says otherwise).
    ``images``: a directory of images for the golden data. ``reference``: ``auto``, ``float64``
    or ``float32`` (`onnxedge.export.onnx_reference.make_reference`).
    ``golden_layers_budget_mb``: golden layers for `onnxedge parity --localize`, every tensor of
    the bundle's graph in float64 for the largest golden batch that fits (None: none stored);
    only with a float64 reference.
    """
    say = progress or (lambda _msg: None)
    src = Path(src)
    if images is not None and not Path(images).is_dir():
        raise OnnxEdgeError(
            f"--images: expected a directory of images, found no directory at {images}"
        )
    BundleWriter(out).check_target()  # before the slow part, not after it
    say(f"reading {src}")
    found = _inspect(src, input_shape, output_kind, input_layout)
    channels, height, width = found.shape
    overrides = dict(preprocessing or {})
    if channels == 1:
        overrides.setdefault("color", "L")
    spec = image_preprocessing(height, width, **overrides)
    if list(spec["resize"]) != [height, width]:
        raise OnnxEdgeError(
            f"the preprocessing resizes to {spec['resize']}, the model's input is "
            f"{list(found.shape)}: expected the same H, W"
        )
    if (spec["color"] == "L") != (channels == 1):
        raise OnnxEdgeError(
            f"the model takes {channels} channel(s); expected preprocessing color "
            f"{'L' if channels == 1 else 'RGB'}, found {spec['color']}"
        )
    labels_block = labels_for(labels, found.classes)

    steps: tuple[StepVerification, ...] = ()
    if found.channels_last is not None:
        step = verify_input_layout(found.channels_last, found.model, (height, width))
        step.raise_if_failed()
        steps = (step,)
    if found.flatten:
        say("flattening the output [N, K, 1, 1] to [N, K]")
        flat = flatten_output(found.model)
        step = verify_output_flatten(found.model, flat)
        step.raise_if_failed()
        found, steps = dataclasses.replace(found, model=flat), (*steps, step)
    named: tuple[str, ...] = ()
    if found.fixed_batch is None:  # dynamic: named where the file leaves it unnamed (-1, no name)
        from onnxedge.export.batch import name_batch_dim

        model, named = name_batch_dim(found.model)
        found = dataclasses.replace(found, model=model)
    lowering = lower_graph(found.model, dynamic_batch=found.fixed_batch is not None, progress=say)
    lowering = dataclasses.replace(
        lowering,
        verifications=(*steps, *lowering.verifications),
        batch_rewrites=(*named, *lowering.batch_rewrites),
    )
    if not lowering.check:
        (first, *_) = lowering.check.failures
        raise OnnxEdgeError(f"the imported graph fails onnxedge check, no bundle written: {first}")

    say("computing the reference on the original file")
    rows, skipped = golden_rows(spec, images, golden_batch_sizes)
    logits_name = _logits_name(found.model, found.kind)
    ref = make_reference(
        found.model,
        rows[max(rows)][0][:1],
        outputs=[logits_name] if logits_name else [],
        fixed=found.fixed_batch,
        choice=reference,
        rows=sum(len(x) for x, _ in rows.values()),
        budget_s=reference_budget_s,
    )
    golden = imported_golden(ref, spec, rows, found.kind, lowering.model, skipped)
    if golden.disagreement:
        # A reference that is not the file's computation would widen parity's bound to itself
        # (an imported model's rounding is measured against it) and fail healthy devices.
        if reference == FLOAT64:
            raise OnnxEdgeError(
                f"--reference float64: {golden.disagreement} (--reference float32 takes ONNX "
                "Runtime's)"
            )
        ref = float32_reference(ref.run_f32, f"{golden.disagreement}; taking ONNX Runtime's")
        golden = imported_golden(ref, spec, rows, found.kind, lowering.model, skipped)
    say("computing the golden layers for `onnxedge parity --localize`")
    layers, layers_block = imported_golden_layers(
        ref, lowering.model, rows, golden_layers_budget_mb
    )

    io = io_spec(lowering.model)
    io["output"]["kind"] = found.kind
    manifest: dict[str, Any] = {
        "model": src.stem,
        "exporter": "import",
        "opset": _opset(lowering.model),
        **io,
        "preprocessing": spec,
        "labels": labels_block,
        "weights": {"source": "onnx", "file": src.name, "sha256": found.sha256},
        "imported": {
            "file": src.name,
            "sha256": found.sha256,
            "producer": " ".join(
                p for p in (found.model.producer_name, found.model.producer_version) if p
            ),
            "opset": _opset(found.model),
            "fixed_batch": found.fixed_batch,
            "input_layout": NCHW if found.channels_last is None else NHWC,
            "output_flattened": found.flatten,
            "batch_rewrites": list(lowering.batch_rewrites),
            "reference": {
                "precision": ref.precision,
                "description": ref.description,
                "reason": ref.reason,
            },
        },
        "graph": {
            "nodes": [n.op_type for n in lowering.model.graph.node],
            "gap_rewrites": list(lowering.rewrites),
            "verified_steps": [v.to_dict() for v in lowering.verifications],
        },
        "check": lowering.check.to_dict(),
        "versions": _versions(),
    }
    data = lowering.model.SerializeToString(deterministic=True)
    say(f"writing the bundle to {out}")
    with BundleWriter(out) as writer:
        writer.write_bytes(MODEL, data)
        writer.write_bytes(GOLDEN, golden.data)
        manifest["golden"] = {"file": GOLDEN, **golden.block}
        if layers is not None:
            writer.write_bytes(GOLDEN_LAYERS, layers)
        manifest["layers"] = layers_block
        writer.manifest.update(manifest)
    return ImportResult(
        out=Path(out),
        manifest=writer.manifest,
        lowering=lowering,
        output_kind=found.kind,
        reference=ref,
    )


def _versions() -> dict[str, str]:
    from onnxedge.export.pipeline import package_versions

    return {k: v for k, v in package_versions().items() if k != "torch"}


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


# --- what the file is -----------------------------------------------------------------------


def load_original(src: Path) -> onnx.ModelProto:
    """The file as a ModelProto, its external data loaded only from inside its folder."""
    if not src.is_file():
        raise OnnxEdgeError(f"expected an ONNX file, found nothing at {src}")
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise OnnxEdgeError(not_onnx(src, e)) from None
    if not model.graph.node and not model.graph.output:
        raise OnnxEdgeError(f"{src} is not an ONNX model: it parses, but holds no graph")
    _check_external_data(model, src)
    try:
        onnx.load_external_data_for_model(model, str(src.parent))
    except Exception as e:
        raise OnnxEdgeError(f"{src}: cannot read its external data: {first_line(e)}") from None
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as e:
        raise OnnxEdgeError(f"{src} is not a valid ONNX model: {first_line(e)}") from None
    return model


def _check_external_data(model: onnx.ModelProto, src: Path) -> None:
    """Every external data file of ``model`` lies inside the model's folder (a path that climbs
    out of it or is absolute, or a link out of it, is refused, not read)."""
    folder = src.parent.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if not onnx.external_data_helper.uses_external_data(tensor):
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise OnnxEdgeError(
                f"{src}: the external data of tensor {tensor.name!r} is at {location!r}; "
                f"expected a file inside the model's folder {folder}"
            )


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value.type.tensor_type.shape.dim
    ]


def _describe(value: onnx.ValueInfoProto) -> str:
    elem = value.type.tensor_type.elem_type
    dtype = onnx.TensorProto.DataType.Name(elem).lower() if elem else "untyped"
    if not value.type.HasField("tensor_type"):
        dtype = "non-tensor"
    return f"{value.name!r} {dtype} {_dims(value)}"


def _inspect(
    src: Path, input_shape: Sequence[int] | None, output_kind: str | None, layout: str = "auto"
) -> ImportedModel:
    """Read ``src`` and say, in one line, why it is not a classifier onnxedge can import; an
    NHWC input is made NCHW (the file kept as ``channels_last`` for the step's verification)."""
    from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session

    model = original = load_original(src)
    data = src.read_bytes()
    inputs = graph_inputs(model.graph)
    if len(inputs) != 1:
        listing = ", ".join(_describe(v) for v in inputs) or "none"
        raise OnnxEdgeError(
            f"{src}: expected one image input [N, C, H, W], found {len(inputs)} inputs: {listing}"
        )
    (image,) = inputs
    dims = _dims(image)
    if image.type.tensor_type.elem_type != _FLOAT32 or len(dims) != 4:
        raise OnnxEdgeError(
            f"{src}: expected a float32 image input [N, C, H, W], found input {_describe(image)}"
        )
    channels_last = None
    if input_layout(dims, layout) == NHWC:
        channels_last, model = original, nchw_input(original)
        (image,) = graph_inputs(model.graph)
        dims = _dims(image)
    shape = _fed_shape(src, dims, input_shape)
    try:
        session = make_session(model.SerializeToString(), SessionConfig(provider="cpu"))
    except OnnxEdgeError as e:
        raise OnnxEdgeError(f"{src}: {e}") from None
    fixed = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    batch = fixed or 2
    try:
        outputs = session.run(None, {image.name: np.zeros((batch, *shape), dtype=np.float32)})
    except Exception as e:
        raise OnnxEdgeError(
            f"{src}: onnxruntime cannot run it on an input [{batch}, "
            f"{', '.join(map(str, shape))}]: {first_line(e)}"
        ) from None
    found = [
        f"{o.name!r} {list(np.shape(v))}" for o, v in zip(model.graph.output, outputs, strict=True)
    ]
    if len(outputs) != 1:
        raise OnnxEdgeError(
            f"{src}: expected one output [N, K] (class scores), found {len(outputs)} outputs: "
            f"{', '.join(found)} (a detector or a multi-head model?)"
        )
    (out,) = outputs
    pooled = np.ndim(out) == 4 and tuple(np.shape(out)[2:]) == (1, 1)  # [N, K, 1, 1]
    if (np.ndim(out) != 2 and not pooled) or np.shape(out)[0] != batch:
        raise OnnxEdgeError(
            f"{src}: expected the output as [N, K] (class scores per image), found {found[0]} "
            f"for an input of {batch} image(s)"
            + (" (a detector, a segmenter or a text recognizer?)" if np.ndim(out) > 2 else "")
        )
    if not np.issubdtype(np.asarray(out).dtype, np.floating):
        raise OnnxEdgeError(
            f"{src}: expected a floating-point output, found {np.asarray(out).dtype}"
        )
    classes = int(np.shape(out)[1])
    kind = _output_kind(src, model, classes, output_kind)
    log.info("import: input %s, output %s, kind %s", _describe(image), found[0], kind)
    return ImportedModel(
        model=model,
        flatten=pooled,
        sha256=hashlib.sha256(data).hexdigest(),
        input_name=image.name,
        shape=shape,
        fixed_batch=fixed,
        classes=classes,
        kind=kind,
        channels_last=channels_last,
    )


def _fed_shape(
    src: Path, dims: list[int | str], input_shape: Sequence[int] | None
) -> tuple[int, int, int]:
    """C, H, W: the graph's where it fixes them, ``input_shape``'s where it does not; a given
    shape that contradicts a fixed dim is an error."""
    given = tuple(int(d) for d in input_shape) if input_shape is not None else None
    if given is not None and (len(given) != 3 or any(d < 1 for d in given)):
        raise OnnxEdgeError(
            f"--input-shape: expected C,H,W (three positive integers), found {given}"
        )
    shape = []
    for i, (dim, name) in enumerate(zip(dims[1:], ("C", "H", "W"), strict=True)):
        if isinstance(dim, int) and dim > 0:
            if given is not None and given[i] != dim:
                raise OnnxEdgeError(
                    f"--input-shape {','.join(map(str, given))}: the model fixes {name} at {dim}"
                )
            shape.append(dim)
        elif given is not None:
            shape.append(given[i])
        else:
            raise OnnxEdgeError(
                f"{src}: the input's {name} is symbolic ({dim!r}) in {dims}; expected "
                "--input-shape C,H,W to say what to feed"
            )
    if shape[0] not in CHANNELS:
        raise OnnxEdgeError(
            f"{src}: expected an image input with 1 (grayscale) or 3 channels, found "
            f"{shape[0]} channels in {dims}"
        )
    return shape[0], shape[1], shape[2]


def _output_kind(src: Path, model: onnx.ModelProto, classes: int, asked: str | None) -> str:
    """The graph's output kind; ``asked`` (--output-kind) must agree with it where the graph ends
    in a Softmax or Sigmoid, and may only say ``logits`` where it ends in neither (parity reads
    the logits at the final activation's input, so a probability output needs its node)."""
    if asked is not None and asked not in KIND_CHOICES:
        raise OnnxEdgeError(
            f"--output-kind: expected one of {', '.join(KIND_CHOICES)}, found {asked!r}"
        )
    try:
        kind = output_kind_of(model, classes)
    except OnnxEdgeError as e:
        raise OnnxEdgeError(f"{src}: {e}") from None
    if asked is None or kind in KIND_CHOICES[asked]:
        return kind
    final = final_activation(model)
    if final is not None:
        what = f"a {final.op_type} node ({final.name!r})"
    else:
        what = f"no Softmax or Sigmoid (so {kind})"
    raise OnnxEdgeError(
        f"--output-kind {asked} contradicts the graph: its output [N, {classes}] comes from "
        f"{what}"
        + (
            "; a probability output must end in its Softmax or Sigmoid node, whose input parity "
            "compares as the logits"
            if final is None
            else ""
        )
    )


def _logits_name(model: onnx.ModelProto, kind: str) -> str | None:
    """The tensor of the original holding the logits: the final activation's input, or None
    where the output is the logits."""
    if kind in (LOGIT, LOGITS):
        return None
    final = final_activation(model)
    return final.input[0] if final is not None else None


# --- golden data ----------------------------------------------------------------------------
