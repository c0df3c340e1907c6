"""Which dims of the batch pass's graph are the batch (`onnxedge.export.batch`): shape inference
from the symbolic input, with the batch carried where ONNX's inference loses it, and the node
that still pins it where the pass could not free it.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as ir_common_passes

BATCH_DIM = "batch"
# Ops whose output has no batch dim even when their input has one.
_SHAPE_READERS = frozenset({"Shape", "Size"})


def is_batch(value: ir.Value | None) -> bool:
    """Whether dim 0 of ``value`` is the symbolic batch (as shape inference propagated it)."""
    shape = value.shape if value is not None else None
    return shape is not None and shape.rank() >= 1 and str(shape[0]) == BATCH_DIM


def const_ints(value: ir.Value | None) -> list[int] | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    if tensor is None:
        return None
    return [int(v) for v in np.asarray(tensor.numpy()).reshape(-1)]


def infer_shapes(model: ir.Model) -> None:
    """Forget the shapes of every node output (they held the fixed batch), graph outputs too, so
    that a pinned batch shows there, and infer them anew from the symbolic input.

    ONNX's shape inference computes a ``Resize``'s output dims from its constant scales only where
    the input's are numbers: a symbolic batch comes out as a new unknown (``unk__0``), and so
    does every dim 0 after it, so that the rules no longer see the batch behind an upsampling
    (HRNet's, residual attention's, octave convolutions'; `keeps_batch`), nor from a
    ``Reshape`` to ``[-1, K]``. Such an output takes the batch, and inference runs again from
    it, until no node is left to settle."""
    settled: dict[ir.Value, ir.Shape] = {}
    for _ in range(len(model.graph) + 1):
        for node in model.graph:
            for value in node.outputs:
                value.shape = settled.get(value)
        ir_common_passes.ShapeInferencePass(strict_mode=False)(model)
        newly = {
            out: ir.Shape([ir.SymbolicDim(BATCH_DIM), *list(out.shape)[1:]])
            for node in model.graph
            if keeps_batch(node)
            for out in node.outputs[:1]
            if out.shape is not None and out.shape.rank() >= 1 and not is_batch(out)
        }
        if not newly:
            return
        settled.update(newly)


def keeps_batch(node: ir.Node) -> bool:
    """Whether the output's dim 0 is the batch where ONNX's inference makes it a new unknown: a
    ``Resize`` or ``Upsample`` of a tensor whose dim 0 is the batch by constant scales whose
    first is 1; a ``Reshape`` of such a tensor to a constant ``[-1, ...]`` whose other dims hold
    exactly the input's (a flatten, as jax2onnx writes its squeeze-excitation's)."""
    if node.domain not in ("", "ai.onnx") or not node.inputs or not is_batch(node.inputs[0]):
        return False
    if node.op_type == "Reshape":
        return _flattens_behind_batch(node)
    if node.op_type not in ("Resize", "Upsample"):
        return False
    if node.op_type == "Upsample" and "scales" in node.attributes:  # opset 7-8
        scales = list(node.attributes["scales"].as_floats())
    else:  # Resize (X, roi, scales, sizes) from opset 11, (X, scales) before; Upsample 9
        inputs = list(node.inputs)
        index = 2 if node.op_type == "Resize" and len(inputs) > 2 else 1
        value = inputs[index] if index < len(inputs) else None
        tensor = ir.convenience.get_const_tensor(value) if value is not None else None
        scales = np.asarray(tensor.numpy()).reshape(-1).tolist() if tensor is not None else []
    return bool(scales) and scales[0] == 1.0


def _flattens_behind_batch(node: ir.Node) -> bool:
    """A Reshape to ``[-1, d1, ...]`` (every ``d`` a positive number) of a tensor ``[batch, e1,
    ...]`` (every ``e`` a number) with the ``d`` multiplying to the ``e``: the -1 is the batch."""
    x = node.inputs[0]
    dims = const_ints(node.inputs[1]) if len(node.inputs) > 1 else None
    if x is None or x.shape is None or not dims or dims[0] != -1:
        return False
    rest = list(x.shape)[1:]
    if not all(isinstance(d, int) for d in rest) or not all(d > 0 for d in dims[1:]):
        return False
    return int(np.prod(rest, dtype=np.int64)) == int(np.prod(dims[1:], dtype=np.int64))


def pinning_node(model: ir.Model) -> str:
    """The first node (in graph order) that reads a tensor whose dim 0 is the batch and writes one
    whose dim 0 is a fixed number and no other dim the batch (``Unsqueeze(x, [0])`` of a stack,
    FractalNet's columns, moves the batch to dim 1 and keeps it), described for a user; "" where
    none does."""
    for index, node in enumerate(model.graph):
        if node.op_type in _SHAPE_READERS:
            continue
        if not any(is_batch(v) and v.shape.rank() >= 2 for v in node.inputs if v is not None):
            continue
        for out in node.outputs:
            shape = out.shape
            if shape is None or shape.rank() < 1 or not isinstance(shape[0], int):
                continue
            if all(str(dim) != BATCH_DIM for dim in shape):
                label = node.name or f"#{index}"
                return (
                    f"{node.op_type} node {label!r} (output {out.name!r} has dim 0 fixed at "
                    f"{shape[0]}, shape {[str(d) for d in shape]})"
                )
    return ""
