"""The shape annotations (``value_info``) an ONNX file carries beside its graph, dropped where
the graph itself contradicts them, for `onnxedge import` and `onnxedge simplify`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx is imported where a graph is read: the commands' options load without it
    import onnx


def drop_contradicted_annotations(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """``model`` without the shape annotations (``value_info``) of intermediate tensors that its
    own graph contradicts, and one line for each: a converter that moved a layout without
    updating them (jax2onnx's residual blocks) leaves annotations ONNX Runtime merges leniently
    but strict shape inference, and so `onnxedge check`, refuses. They describe, they do not
    compute: the graph is unchanged, and each later step is still verified against it. An
    annotation shape inference does not reach is kept."""
    import onnx

    if not model.graph.value_info:
        return model, ()
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(bare)
    except Exception:  # left to the checker, which says why
        return model, ()
    computed = {v.name: v for v in inferred.graph.value_info}
    keep, dropped = [], []
    for value in model.graph.value_info:
        other = computed.get(value.name)
        if other is not None and _contradicts(value.type, other.type):
            dropped.append(f"{value.name!r} {_type(value.type)}, computed {_type(other.type)}")
        else:
            keep.append(value)
    if not dropped:
        return model, ()
    del bare.graph.value_info[:]
    bare.graph.value_info.extend(keep)
    return bare, tuple(dropped)


def _contradicts(annotated: onnx.TypeProto, computed: onnx.TypeProto) -> bool:
    """Whether two tensor types cannot both hold: element types, ranks or fixed dims differ."""
    if not (annotated.HasField("tensor_type") and computed.HasField("tensor_type")):
        return False
    a, b = annotated.tensor_type, computed.tensor_type
    if a.elem_type and b.elem_type and a.elem_type != b.elem_type:
        return True
    if not (a.HasField("shape") and b.HasField("shape")):
        return False
    if len(a.shape.dim) != len(b.shape.dim):
        return True
    return any(
        x.HasField("dim_value") and y.HasField("dim_value") and x.dim_value != y.dim_value
        for x, y in zip(a.shape.dim, b.shape.dim, strict=True)
    )


def _type(value: onnx.TypeProto) -> str:
    """``float ['B', 16, 64, 64]``: a tensor type as the lines show it."""
    import onnx

    tensor = value.tensor_type
    dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower() if tensor.elem_type else "?"
    dims = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
    ]
    return f"{dtype} {dims}"


def dropped_line(dropped: tuple[str, ...] | list[str], shown: int = 3) -> str:
    """The line `onnxedge import` and `onnxedge simplify` print for the annotations they dropped
    (``""``: none), the first ``shown`` of them named."""
    if not dropped:
        return ""
    more = f" and {len(dropped) - shown} more" if len(dropped) > shown else ""
    return (
        f"annotations: dropped {len(dropped)} shape annotation(s) (value_info) the graph "
        f"contradicts: {'; '.join(dropped[:shown])}{more}"
    )
