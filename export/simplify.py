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
    """Run onnxsim and assert that the inputs' and outputs' dims, symbolic ones included, survive
    (`_same_dims`: an output dim of a graph whose inputs are all fixed may become a number).

    onnxsim's own random check is off (``check_n=0``): it cannot feed symbolic dims. The caller
    compares the graphs with `onnxedge.export.verify.verify_onnx_step` instead.
    """
    import onnxsim

    from onnxedge.runtime.check.check import graph_inputs

    before = symbolic_dims(model)
    try:
        simplified, ok = onnxsim.simplify(model, check_n=0)
    except Exception as e:
        raise OnnxEdgeError(f"onnxsim failed: {first_line(e)}") from None
    if not ok:
        raise OnnxEdgeError("onnxsim reported that the simplified model could not be validated")
    after = symbolic_dims(simplified)
    if not _same_dims(before, after, [i.name for i in graph_inputs(model.graph)]):
        raise OnnxEdgeError(f"onnxsim changed the graph's input/output dims: {before} -> {after}")
    return simplified


def _same_dims(
    before: dict[str, list[str | int]], after: dict[str, list[str | int]], inputs: list[str]
) -> bool:
    """``after`` has ``before``'s dims, except that an output dim which shape inference left
    unnamed or named for itself (torch's ``Gemm1154_dim_0``) may have become a number where
    every input's dims are numbers: the graph then fixes every output dim, and onnxsim found
    it (efficientnet_edge_small_b exported at batch 1 by torch's TorchScript exporter). A symbol
    that an input shares (the batch) must stay."""
    if before.keys() != after.keys():
        return False
    fixed = all(isinstance(d, int) for name in inputs for d in before.get(name, []))
    for name, dims in before.items():
        new = after[name]
        if len(new) != len(dims):
            return False
        for old, now in zip(dims, new, strict=True):
            settled = fixed and name not in inputs and isinstance(old, str) and isinstance(now, int)
            if old != now and not settled:
                return False
    return True
