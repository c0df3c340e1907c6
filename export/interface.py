"""The edits `onnxedge import` makes to a file's interface, each verified by the caller
(`onnxedge.export.verify`): a channels-last image input made channels-first (`nchw_input`, for
models exported from TensorFlow or Keras by tf2onnx, whose input is NHWC [N, H, W, C]), one
output kept of several (`kept_output`), and an output [N, K, 1, 1] flattened to [N, K]
(`flatten_output`).

ONNX's convolutions are NCHW, so such a file transposes its input first; the bundle's runtime
feeds NCHW, as every other bundle. `nchw_input` gives the graph a new NCHW input of the same name
with ``Transpose(perm=[0, 2, 3, 1])`` in front of what read the old one (an onnx_ir edit), which
onnxscript's transpose rules cancel against the file's own Transpose to NCHW where one follows,
and the caller verifies the result against the original fed the same images channels-last
(`onnxedge.export.verify.verify_input_layout`).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as ir_common_passes
from onnxscript.rewriter import RewriteRuleSet
from onnxscript.rewriter.rules.common import no_op_transpose_rule, transpose_transpose_rule

from onnxedge.export.layouts import LAYOUTS, NCHW, NHWC, TO_NHWC
from onnxedge.runtime.errors import OnnxEdgeError

__all__ = [
    "LAYOUTS",
    "NCHW",
    "NHWC",
    "TO_NHWC",
    "flatten_output",
    "input_layout",
    "kept_output",
    "nchw_input",
]

_CHANNELS = (1, 3)


def input_layout(dims: Sequence[int | str], asked: str = "auto") -> str:
    """The layout of an image input of ``dims`` [N, ?, ?, ?]: ``asked`` where it is NCHW or NHWC,
    else NHWC where only the last dim is a fixed 1 or 3 channels (``[1, 224, 224, 3]``), else
    NCHW."""
    if asked not in LAYOUTS:
        raise OnnxEdgeError(
            f"--input-layout: expected one of {', '.join(LAYOUTS)}, found {asked!r}"
        )
    if asked != "auto":
        return asked
    last, second = dims[3], dims[1]
    channels_last = isinstance(last, int) and last in _CHANNELS
    channels_first = isinstance(second, int) and second in _CHANNELS
    return NHWC if channels_last and not channels_first else NCHW


def nchw_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, whose one image input is NHWC, with that input NCHW: a new graph input of the
    same name and type, dims [N, C, H, W], and ``Transpose(perm=[0, 2, 3, 1])`` giving what the
    old input gave. ``model`` is not changed."""
    model_ir = ir.serde.deserialize_model(model)
    graph = model_ir.graph
    (old,) = [v for v in graph.inputs if not v.is_initializer()]
    dims = list(old.shape) if old.shape is not None else []
    if len(dims) != 4:
        raise OnnxEdgeError(f"expected an image input [N, H, W, C], found {old.name!r} {dims}")
    n, h, w, c = dims
    name = old.name
    old.name = f"{name}_nhwc"
    new = ir.Value(name=name, shape=ir.Shape([n, c, h, w]), type=old.type)
    transpose = ir.node(
        "Transpose", inputs=[new], attributes={"perm": list(TO_NHWC)}, name=f"{name}_to_nhwc"
    )
    moved = transpose.outputs[0]
    moved.name, moved.type, moved.shape = old.name, old.type, old.shape
    old.replace_all_uses_with(moved)
    graph.inputs[graph.inputs.index(old)] = new
    if len(graph):
        graph.insert_before(next(iter(graph)), transpose)
    else:
        graph.append(transpose)
    # The file's own Transpose to NCHW after it composes to the identity: both go.
    RewriteRuleSet([transpose_transpose_rule, no_op_transpose_rule]).apply_to_model(model_ir)
    ir_common_passes.RemoveUnusedNodesPass()(model_ir)
    return ir.serde.serialize_model(model_ir)


def flatten_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` whose one output ``[N, K, 1, 1]`` (a 1x1 convolution classifier after the
    pool, as SqueezeNet's) is followed by ``Flatten(axis=1)``: the output keeps its name and
    becomes ``[N, K]``, the same numbers. An onnx_ir edit; ``model`` is not changed."""
    model_ir = ir.serde.deserialize_model(model)
    graph = model_ir.graph
    pooled = graph.outputs[0]
    name = pooled.name
    pooled.name = f"{name}_nk11"
    node = ir.node("Flatten", inputs=[pooled], attributes={"axis": 1}, name=f"{name}_flatten")
    flat = node.outputs[0]
    flat.name, flat.dtype = name, pooled.dtype
    dims = list(pooled.shape) if pooled.shape is not None else ["N", None]
    flat.shape = ir.Shape(dims[:2])
    graph.append(node)
    graph.outputs[0] = flat
    return ir.serde.serialize_model(model_ir)


def kept_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """``model`` with only its output ``name``: the others, and the nodes only they needed, are
    dropped (an onnx_ir edit; ``model`` is not changed)."""
    model_ir = ir.serde.deserialize_model(model)
    graph = model_ir.graph
    (kept,) = [v for v in graph.outputs if v.name == name]
    graph.outputs.clear()
    graph.outputs.append(kept)
    ir_common_passes.RemoveUnusedNodesPass()(model_ir)
    return ir.serde.serialize_model(model_ir)
