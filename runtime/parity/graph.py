"""The check-only graph: the logits (the final Sigmoid's or Softmax's input,
`onnxedge.runtime.bundle.outputs.logits_tensor`) found in ``model.onnx`` and added as an output of
an
in-memory copy; the shipped graph keeps its one output."""

from __future__ import annotations

import copy

import onnx

from onnxedge.runtime.bundle.outputs import SIGMOID_PROBABILITY, logits_tensor
from onnxedge.runtime.errors import OnnxEdgeError


def find_logits_tensor(model: onnx.ModelProto, output: str | None = None) -> str:
    """The name of the tensor that feeds the Sigmoid producing the graph's (first) output."""
    return logits_tensor(model, SIGMOID_PROBABILITY, output)


def with_logits_output(model: onnx.ModelProto, logits_name: str) -> onnx.ModelProto:
    """A check-only copy of ``model`` that also outputs ``logits_name``; the shipped graph keeps
    its one output."""
    produced = {out for node in model.graph.node for out in node.output}
    if logits_name not in produced:
        raise OnnxEdgeError(
            f"model.onnx has no tensor {logits_name!r} (the pre-sigmoid tensor the golden data "
            "was recorded for)"
        )
    checked = copy.deepcopy(model)
    if logits_name in {o.name for o in checked.graph.output}:
        return checked
    if _elem_type(checked, logits_name) not in (None, onnx.TensorProto.FLOAT):
        # An fp16 variant computes its logits in float16: the copy's producer writes them under
        # another name and a Cast gives them back as float32 under ``logits_name``.
        inner = f"{logits_name}__compute"
        for node in checked.graph.node:
            node.output[:] = [inner if o == logits_name else o for o in node.output]
            node.input[:] = [inner if i == logits_name else i for i in node.input]
        checked.graph.node.append(
            onnx.helper.make_node("Cast", [inner], [logits_name], to=onnx.TensorProto.FLOAT)
        )
    checked.graph.output.append(
        onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None)
    )
    return checked


def _elem_type(model: onnx.ModelProto, name: str) -> int | None:
    """The element type shape inference gives ``name`` (None where it cannot tell)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return None
    for info in (*inferred.graph.value_info, *inferred.graph.output):
        if info.name == name and info.type.tensor_type.elem_type:
            return info.type.tensor_type.elem_type
    return None
