"""The check-only graph: the Sigmoid's input (the logits) found in ``model.onnx`` and added as an
output of an in-memory copy; the shipped graph keeps its one output."""

from __future__ import annotations

import copy

import onnx

from onnxedge.runtime.check import producers_of, walk_back
from onnxedge.runtime.errors import OnnxEdgeError

# Ops that may sit between the Sigmoid and the graph output without changing values.
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def find_logits_tensor(model: onnx.ModelProto, output: str | None = None) -> str:
    """The name of the tensor that feeds the Sigmoid producing the graph's (first) output."""
    name = output or model.graph.output[0].name
    node = walk_back(name, producers_of(model.graph), set(), _PASS_THROUGH, stop={"Sigmoid"})
    if node is not None and node.op_type == "Sigmoid":
        return node.input[0]
    raise OnnxEdgeError(
        f"expected the output {name!r} to come from a Sigmoid, found "
        + (f"{node.op_type} node {node.name!r}" if node is not None else "no Sigmoid before it")
    )


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
