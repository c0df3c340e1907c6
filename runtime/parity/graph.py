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
    if logits_name not in {o.name for o in checked.graph.output}:
        checked.graph.output.append(
            onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None)
        )
    return checked
