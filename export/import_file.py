"""What an ONNX file brought to `onnxedge import` is (`onnxedge.export.importer`): read with its
external data kept inside its folder, refused in one line where it is not an image classifier
onnxedge can import (several inputs, an input that is not a float image, no ``[N, K]`` output, an
output kind that contradicts the graph), and its interface edited where it must be (an NHWC input
made NCHW, one output kept of several; `onnxedge.export.interface`), each edit verified by the
caller. `inspect_file` gives an `ImportedModel`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from onnxedge.export.annotations import (
    describe_value,
    drop_contradicted_annotations,
    value_dims,
)
from onnxedge.export.interface import NHWC, input_layout, kept_output, nchw_input
from onnxedge.runtime.bundle.outputs import (
    LOGIT,
    LOGITS,
    PROBABILITIES,
    SIGMOID_PROBABILITY,
    final_activation,
    output_kind_of,
)
from onnxedge.runtime.check.check import graph_inputs, refuse_graphless
from onnxedge.runtime.errors import OnnxEdgeError, first_line, found_at, not_onnx

log = logging.getLogger(__name__)

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
    """What `inspect_file` found in the original file."""

    model: onnx.ModelProto
    sha256: str
    input_name: str
    shape: tuple[int, int, int]  # C, H, W fed (from the graph, or --input-shape where symbolic)
    fixed_batch: int | None  # dim 0 of the input where the file fixes it
    classes: int
    kind: str
    flatten: bool = False  # the output is [N, K, 1, 1]: flattened to [N, K] first
    channels_last: onnx.ModelProto | None = None  # the file, where its input was NHWC
    several_outputs: onnx.ModelProto | None = None  # before `kept_output`, where it had several
    annotations_dropped: tuple[str, ...] = ()  # value_info the graph contradicts, dropped


def dropped_outputs(found: ImportedModel) -> list[str]:
    """The file's outputs other than the one kept (none where it had one)."""
    if found.several_outputs is None:
        return []
    kept = found.model.graph.output[0].name
    return [o.name for o in found.several_outputs.graph.output if o.name != kept]


# --- what the file is -----------------------------------------------------------------------


def load_original(src: Path) -> onnx.ModelProto:
    """The file as a ModelProto, its external data loaded only from inside its folder."""
    if not src.is_file():
        raise OnnxEdgeError(f"expected an ONNX file, found {found_at(src)}")
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise OnnxEdgeError(not_onnx(src, e)) from None
    refuse_graphless(model, src)
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


def inspect_file(
    src: Path,
    input_shape: Sequence[int] | None,
    output_kind: str | None,
    layout: str = "auto",
    output_name: str | None = None,
) -> ImportedModel:
    """Read ``src`` and say, in one line, why it is not a classifier onnxedge can import; an
    NHWC input is made NCHW (the file kept as ``channels_last`` for the step's verification)."""
    from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session

    model, dropped = drop_contradicted_annotations(load_original(src))
    original = model
    data = src.read_bytes()
    inputs = graph_inputs(model.graph)
    if len(inputs) != 1:
        listing = ", ".join(describe_value(v) for v in inputs) or "none"
        raise OnnxEdgeError(
            f"{src}: expected one image input [N, C, H, W], found {len(inputs)} inputs: {listing}"
        )
    (image,) = inputs
    dims = value_dims(image)
    if image.type.tensor_type.elem_type != _FLOAT32 or len(dims) != 4:
        raise OnnxEdgeError(
            f"{src}: expected a float32 image input [N, C, H, W], found input "
            f"{describe_value(image)}"
        )
    channels_last = None
    if input_layout(dims, layout) == NHWC:
        channels_last, model = original, nchw_input(original)
        (image,) = graph_inputs(model.graph)
        dims = value_dims(image)
    several = None
    if output_name is not None:
        names = [o.name for o in model.graph.output]
        if output_name not in names:
            raise OnnxEdgeError(
                f"--output-name {output_name!r}: expected one of the file's outputs, found "
                + ", ".join(map(repr, names))
            )
        if len(names) > 1:
            several, model = model, kept_output(model, output_name)
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
            f"{', '.join(found)} (a detector or a multi-head model? --output-name NAME keeps "
            "one)"
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
    log.info("import: input %s, output %s, kind %s", describe_value(image), found[0], kind)
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
        several_outputs=several,
        annotations_dropped=dropped,
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


def logits_name(model: onnx.ModelProto, kind: str) -> str | None:
    """The tensor of the original holding the logits: the final activation's input, or None
    where the output is the logits."""
    if kind in (LOGIT, LOGITS):
        return None
    final = final_activation(model)
    return final.input[0] if final is not None else None
