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
            dropped.append(f"{describe_value(value)}, computed {_type(other)}")
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


def value_dims(value: onnx.ValueInfoProto) -> list[int | str]:
    """A value's dims: numbers, symbols by their names, "?" where neither is given."""
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value.type.tensor_type.shape.dim
    ]


def describe_value(value: onnx.ValueInfoProto) -> str:
    """``'x' float ['B', 3, 64, 64]``: a value as the lines show it."""
    return f"{value.name!r} {_type(value)}"


def _type(value: onnx.ValueInfoProto) -> str:
    import onnx

    if not value.type.HasField("tensor_type"):
        return f"non-tensor {value_dims(value)}"
    elem = value.type.tensor_type.elem_type
    dtype = onnx.TensorProto.DataType.Name(elem).lower() if elem else "untyped"
    return f"{dtype} {value_dims(value)}"


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
