"""onnxsim, keeping the symbolic batch dim, verified numerically against the graph it came from."""

from __future__ import annotations

import onnx

from onnxedge.runtime.errors import OnnxEdgeError, first_line


def symbolic_dims(model: onnx.ModelProto) -> dict[str, list[str | int]]:
    """Every graph input's and output's dims, symbolic ones as their names."""
    from onnxedge.runtime.check.check import graph_inputs

    dims: dict[str, list[str | int]] = {}
    for value in [*graph_inputs(model.graph), *model.graph.output]:
        dims[value.name] = [
            d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
            for d in value.type.tensor_type.shape.dim
        ]
    return dims


def simplify_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run onnxsim and assert that the inputs' and outputs' dims, symbolic ones included, survive.

    onnxsim's own random check is off (``check_n=0``): it cannot feed symbolic dims. The caller
    compares the graphs with `onnxedge.export.verify.verify_onnx_step` instead.
    """
    import onnxsim

    before = symbolic_dims(model)
    try:
        simplified, ok = onnxsim.simplify(model, check_n=0)
    except Exception as e:
        raise OnnxEdgeError(f"onnxsim failed: {first_line(e)}") from None
    if not ok:
        raise OnnxEdgeError("onnxsim reported that the simplified model could not be validated")
    after = symbolic_dims(simplified)
    if after != before:
        raise OnnxEdgeError(f"onnxsim changed the graph's input/output dims: {before} -> {after}")
    return simplified
