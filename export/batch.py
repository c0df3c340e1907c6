"""Make a fixed batch dim symbolic: the graph's inputs and outputs, and the constants that pin it.

Models exported elsewhere (Caffe2, old converters, an export traced at batch 1) often fix dim 0 of
their input at 1 and spell the flatten before the classifier as ``Reshape(x, [1, -1])``. This
pass, an ``onnx_ir`` pass whose cases are onnxscript rewrite rules (as `onnxedge.export.gap`),
makes the batch symbolic where the graph allows; `make_batch_dynamic` reports the node that still
pins it where it does not. The caller verifies the result against the original graph at several
batch sizes (`onnxedge.export.verify.verify_batch_step`).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as ir_common_passes
from onnxscript.rewriter import MatchContext, MatchResult, RewriteRuleClassBase, RewriteRuleSet

from onnxedge.export.batch_shapes import (
    BATCH_DIM,
    const_ints,
    infer_shapes,
    is_batch,
    pinning_node,
)
from onnxedge.runtime.errors import OnnxEdgeError

__all__ = [
    "BATCH_DIM",
    "BatchResult",
    "MakeBatchDynamicPass",
    "batch_rules",
    "fixed_batch",
    "make_batch_dynamic",
    "name_batch_dim",
]

log = logging.getLogger(__name__)

_SLICE_INPUTS_OPSET = 10


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """The model with a symbolic batch, what was rewritten, and the node that still pins the
    batch (empty where none does)."""

    model: onnx.ModelProto
    fixed: int  # the batch the original fixed
    rewrites: tuple[str, ...]
    pinned_by: str = ""


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """Dim 0 of the model's one image input when it is a fixed number, else None."""
    from onnxedge.runtime.check.check import graph_inputs

    (value,) = graph_inputs(model.graph)
    dims = value.type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        return int(dims[0].dim_value)
    return None


class _BatchRule(RewriteRuleClassBase):
    """Shared plumbing: the fixed batch, the graph input it comes from, and the report."""

    def __init__(self, fixed: int, image: ir.Value, rewrites: list[str], opset: int) -> None:
        super().__init__()
        self.fixed = fixed
        self.image = image
        self.rewrites = rewrites
        self.opset = opset

    def _report(self, node: ir.Node | None, detail: str) -> None:
        label = (node.name or node.op_type) if node is not None else "?"
        self.rewrites.append(f"{node.op_type if node else '?'} {label!r}: {detail}")

    def _batch_of_input(self, op):
        """``Shape(image)[0:1]``: the run-time batch, as a 1-D int64 tensor (Slice takes its
        bounds as attributes before opset 10, as inputs from it)."""
        shape = op.Shape(self.image)
        if self.opset < _SLICE_INPUTS_OPSET:
            return op.Slice(shape, starts=[0], ends=[1], axes=[0])
        bound = [op.Constant(value=ir.tensor(np.asarray([v], dtype=np.int64))) for v in (0, 1)]
        return op.Slice(shape, *bound)

    def _fed_batch_then(self, op, node: ir.Node | None, what: str, dims: list[int]):
        """``dims`` with dim 0 the fed batch: ``Concat(Shape(image)[0:1], dims[1:])``; the
        rewrite of ``node``'s ``what`` reported."""
        rest = op.Constant(value=ir.tensor(np.asarray(dims[1:], dtype=np.int64)))
        self._report(node, f"{what} {dims} -> [batch, {', '.join(map(str, dims[1:]))}]")
        return op.Concat(self._batch_of_input(op), rest, axis=0)


class ReshapeToCopiedBatch(_BatchRule):
    """Case 1.: ``Reshape(x, [B, ...])`` where dim 0 of ``x`` is the batch → ``Reshape(x, [0,
    ...])`` (0 copies the input's dim). ``allowzero=1`` (which torch's dynamo exporter writes on
    every Reshape) would read that 0 literally, so it is dropped: the same where no other dim of
    the shape is 0, as none is in a shape that does not empty the tensor."""

    def pattern(self, op, x, shape):
        return op.Reshape(x, shape, _allow_other_attributes=True, _outputs=["reshaped"])

    def check(self, context: MatchContext, x, shape, reshaped) -> MatchResult:
        result = MatchResult()
        if not is_batch(x):
            return result.fail(f"dim 0 of {x.name!r} is not the batch")
        dims = const_ints(shape)
        if dims is None or not dims:
            return result.fail("the target shape is not a constant")
        if dims[0] != self.fixed:
            return result.fail(f"the target shape {dims} does not start with the batch")
        if context.root.attributes.get_int("allowzero", 0) and 0 in dims[1:]:
            return result.fail(f"allowzero=1 and a 0 in {dims}: an empty tensor")
        return result

    def rewrite(self, op, x, shape, reshaped):
        node = reshaped.producer()
        dims = const_ints(shape) or []
        new = [0, *dims[1:]]
        literal = node is not None and node.attributes.get_int("allowzero", 0) == 1
        self._report(node, f"shape {dims} -> {new}" + (" (allowzero 1 -> 0)" if literal else ""))
        target = op.Constant(value=ir.tensor(np.asarray(new, dtype=np.int64)))
        return op.Reshape(x, target, _name=node.name if node is not None else None)


class FlattenAtAxisZero(_BatchRule):
    """Case 2.: ``Flatten(x, axis=0)`` (``[1, N*C*H*W]``) at a fixed batch of 1 where dim 0 of
    ``x`` is the batch → ``Flatten(x, axis=1)``, the same at batch 1 and ``[N, C*H*W]`` after."""

    def pattern(self, op, x):
        return op.Flatten(x, _allow_other_attributes=True, _outputs=["flat"])

    def check(self, context: MatchContext, x, flat) -> MatchResult:
        result = MatchResult()
        if context.root.attributes.get_int("axis", 1) != 0:
            return result.fail("axis is not 0")
        if self.fixed != 1:
            return result.fail(f"a fixed batch of {self.fixed}: axis=0 mixes the rows")
        if not is_batch(x):
            return result.fail(f"dim 0 of {x.name!r} is not the batch")
        return result

    def rewrite(self, op, x, flat):
        node = flat.producer()
        self._report(node, "axis 0 -> 1")
        return op.Flatten(x, axis=1, _name=node.name if node is not None else None)


class _ToRunTimeBatch(_BatchRule):
    """Cases 3. and 4.: ``Expand(c, [B, ...])`` or ``Tile(c, [B, ...])`` of a tensor ``c`` whose
    dim 0 is 1 and not the batch (a constant, a class token) → the same op with dim 0 of its
    second input ``Shape(image)[0:1]``, so that it follows the batch that is fed."""

    op_type = ""
    second = ""  # what the op's second input is called, for the report

    def pattern(self, op, x, counts):
        return getattr(op, self.op_type)(x, counts, _outputs=["result"])

    def check(self, context: MatchContext, x, counts, result) -> MatchResult:
        match = MatchResult()
        dims = const_ints(counts)
        if dims is None or not dims:
            return match.fail(f"the {self.second} are not a constant")
        if dims[0] != self.fixed:
            return match.fail(f"{self.second} {dims} do not start with the batch")
        if is_batch(x):
            return match.fail(f"dim 0 of {x.name!r} is already the batch")
        if x.shape is not None and x.shape.rank() == len(dims) and x.shape[0] != 1:
            return match.fail(f"dim 0 of {x.name!r} is not 1")
        return match

    def rewrite(self, op, x, counts, result):
        node = result.producer()
        target = self._fed_batch_then(op, node, self.second, const_ints(counts) or [])
        make = getattr(op, self.op_type)
        return make(x, target, _name=node.name if node is not None else None)


class ExpandToRunTimeBatch(_ToRunTimeBatch):
    """Case 3.: ``Expand`` to a constant shape that starts with the fixed batch."""

    op_type = "Expand"
    second = "shape"


class TileToRunTimeBatch(_ToRunTimeBatch):
    """Case 4.: ``Tile`` whose constant repeats start with the fixed batch."""

    op_type = "Tile"
    second = "repeats"


class ResizeToRunTimeBatch(_BatchRule):
    """Case 5.: ``Resize(x, roi, scales, sizes)`` to constant sizes that start with the fixed
    batch, where dim 0 of ``x`` is the batch (``F.interpolate(size=...)`` traced at batch 1:
    SCNet's) → dim 0 of the sizes ``Shape(image)[0:1]``; the other sizes and every attribute
    stay."""

    def pattern(self, op, x):
        return op.Resize(
            x, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["resized"]
        )

    def check(self, context: MatchContext, x, resized) -> MatchResult:
        match = MatchResult()
        if not is_batch(x):
            return match.fail(f"dim 0 of {x.name!r} is not the batch")
        inputs = list(context.root.inputs)
        dims = const_ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
        if dims is None or not dims or dims[0] != self.fixed:
            return match.fail(f"the sizes {dims} are not constant or do not start with the batch")
        return match

    def rewrite(self, op, x, resized):
        node = resized.producer()
        assert node is not None
        _, roi, scales, sizes = list(node.inputs)[:4]
        target = self._fed_batch_then(op, node, "sizes", const_ints(sizes) or [])
        return op.Resize(x, roi, scales, target, _name=node.name, **dict(node.attributes))


class ConcatOfRunTimeBatch(_BatchRule):
    """Case 6.: ``Concat`` along an axis other than the batch of a tensor whose dim 0 is the
    batch and a constant whose dim 0 is the fixed batch, each of its rows the same
    (``torch.zeros_like(x)`` traced at batch 1: 1-bit WRN's shortcut) → the constant's first row
    expanded to the fed batch, ``Expand(c[:1], [Shape(image)[0:1], ...])``."""

    def pattern(self, op, x):
        return op.Concat(
            x, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["joined"]
        )

    def _constants(self, node: ir.Node) -> dict[int, np.ndarray]:
        """The inputs of ``node`` to expand, by position: constants whose rows are one row."""
        found = {}
        for index, value in enumerate(node.inputs):
            tensor = ir.convenience.get_const_tensor(value) if value is not None else None
            array = np.asarray(tensor.numpy()) if tensor is not None else None
            if array is None or array.ndim < 2 or array.shape[0] != self.fixed:
                continue
            if (array == array[:1]).all():
                found[index] = array[:1]
        return found

    def check(self, context: MatchContext, x, joined) -> MatchResult:
        match = MatchResult()
        node = context.root
        inputs = list(node.inputs)
        rank = inputs[0].shape.rank() if inputs[0] is not None and inputs[0].shape else None
        if rank is None or node.attributes.get_int("axis", 0) % rank == 0:
            return match.fail("not a concatenation along a known axis other than the batch")
        if not any(is_batch(v) for v in inputs):
            return match.fail("no input's dim 0 is the batch")
        if not self._constants(node):
            return match.fail("no constant input of the fixed batch with one row repeated")
        return match

    def rewrite(self, op, x, joined):
        node = joined.producer()
        assert node is not None
        inputs = list(node.inputs)
        for index, row in self._constants(node).items():
            target = self._fed_batch_then(op, node, "constant input", list(row.shape))
            inputs[index] = op.Expand(op.Constant(value=ir.tensor(row)), target)
        return op.Concat(*inputs, _name=node.name, **dict(node.attributes))


def batch_rules(fixed: int, image: ir.Value, rewrites: list[str], opset: int) -> RewriteRuleSet:
    """The rule set of `MakeBatchDynamicPass` (cases 1. to 6.) for a graph of ``opset``; each
    rewrite is appended to ``rewrites``."""
    return RewriteRuleSet(
        [
            rule.rule(fixed, image, rewrites, opset)
            for rule in (
                ReshapeToCopiedBatch,
                FlattenAtAxisZero,
                ExpandToRunTimeBatch,
                TileToRunTimeBatch,
                ResizeToRunTimeBatch,
                ConcatOfRunTimeBatch,
            )
        ]
    )


class MakeBatchDynamicPass(ir.passes.InPlacePass):
    """Make the fixed dim 0 of the one graph input, and of every graph output, the symbolic
    ``batch``, and rewrite the constants that pin it:

    1. ``Reshape`` to a constant shape starting with the fixed batch, of a tensor whose dim 0 is
       the batch: that dim becomes 0 (copied from the input); ``[1, -1]`` becomes ``[0, -1]``,
       and an ``allowzero=1`` is dropped.
    2. ``Flatten(axis=0)`` at a fixed batch of 1: ``axis=1``.
    3. ``Expand`` of a tensor without the batch to a constant shape starting with it: dim 0 of
       the shape becomes the fed batch, ``Shape(input)[0:1]``.
    4. ``Tile`` of such a tensor whose dim 0 is 1, repeated the fixed batch times: the same.
    5. ``Resize`` of a tensor whose dim 0 is the batch to constant sizes that start with the
       fixed batch: the same for the sizes.
    6. ``Concat`` (not along dim 0) of such a tensor and a constant whose dim 0 is the fixed
       batch, its rows alike: the constant's one row expanded to the fed batch.

    Shape inference runs between rounds of the rules, so a reshape behind another one is seen
    once the first is rewritten, until a round rewrites nothing. ``rewrites`` holds what the
    latest call did; ``pinned_by`` the first node that still turns a batch-sized input into a
    fixed dim 0 ("" where none does).
    """

    def __init__(self, fixed: int) -> None:
        super().__init__()
        self.fixed = fixed
        self.rewrites: tuple[str, ...] = ()
        self.pinned_by = ""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        (image,) = [v for v in graph.inputs if not v.is_initializer()]
        for value in [image, *graph.outputs]:
            if value.shape is None or value.shape.rank() < 1 or value.shape[0] != self.fixed:
                found = list(value.shape) if value.shape is not None else "no shape"
                raise OnnxEdgeError(
                    f"expected dim 0 of {value.name!r} to be the fixed batch {self.fixed}, "
                    f"found {found}"
                )
            value.shape = ir.Shape([ir.SymbolicDim(BATCH_DIM), *list(value.shape)[1:]])
        declared = [value.shape for value in graph.outputs]
        rewrites: list[str] = []
        # Rules and shape inference alternate until a round rewrites nothing: each reshape of a
        # chain (ShuffleNet's channel shuffles: 33 in a row) shows the batch behind it only once
        # the one before is rewritten. A rewritten node matches no rule again, so the rounds are
        # at most the nodes.
        for _ in range(len(graph) + 1):
            infer_shapes(model)
            before = len(rewrites)
            opset = model.graph.opset_imports.get("", 1)
            batch_rules(self.fixed, image, rewrites, opset).apply_to_model(model)
            if len(rewrites) == before:
                break
        infer_shapes(model)
        self.rewrites = tuple(rewrites)
        self.pinned_by = pinning_node(model)
        # A rewrite may have replaced a graph output by a new value: restored by position.
        for value, shape in zip(graph.outputs, declared, strict=True):
            value.shape = shape
        return ir.passes.PassResult(model, modified=True)


def make_batch_dynamic(model: onnx.ModelProto) -> BatchResult:
    """Apply `MakeBatchDynamicPass` to a proto whose one input has a fixed batch; the input proto
    is not modified. The result's ``pinned_by`` names the node that still pins the batch."""
    fixed = fixed_batch(model)
    if fixed is None:
        raise OnnxEdgeError("expected an input with a fixed batch dim, found a symbolic one")
    model_ir = ir.serde.deserialize_model(model)
    batch_pass = MakeBatchDynamicPass(fixed)
    batch_pass(model_ir)
    # Inferred shapes were a means to decide; the result keeps only its inputs' and outputs'.
    for node in model_ir.graph:
        for value in node.outputs:
            if not value.is_graph_output():
                value.shape = None
    ir_common_passes.RemoveUnusedNodesPass()(model_ir)
    for rewrite in batch_pass.rewrites:
        log.info("batch: %s", rewrite)
    return BatchResult(
        model=ir.serde.serialize_model(model_ir),
        fixed=fixed,
        rewrites=batch_pass.rewrites,
        pinned_by=batch_pass.pinned_by,
    )


def _unnamed(dim: int | ir.SymbolicDim) -> bool:
    """A dynamic dim without a name: a number below 1 (-1 as PaddlePaddle's converter writes it:
    ONNX Runtime reads it as dynamic, ONNX's IR allows only sizes >= 0) or a dim with neither a
    size nor a name."""
    if isinstance(dim, int):
        return dim < 1
    return dim.value is None


def name_batch_dim(
    model: onnx.ModelProto, symbol: str | None = None
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """``model`` with one name, ``symbol``, for the dynamic dim 0 of its inputs and outputs, and
    what was renamed, one line each. ``symbol`` None: the name an input has, else the first an
    output has, else ``BATCH_DIM``. A dim 0 without a name (a number below 1, or neither a size nor
    a name) or with another name (tf2onnx names the input's ``unk__16`` and the output's
    ``unk__17``; torch's exporters ``s0``) takes it; a fixed size is left (and `check` flags it).
    The caller has seen the outputs follow the input's batch. The input proto is not modified; a
    model with nothing to rename is returned as it is."""
    model_ir = ir.serde.deserialize_model(model)
    graph = model_ir.graph
    values = [v for v in graph.inputs if not v.is_initializer()] + list(graph.outputs)
    shaped = [v for v in values if v.shape is not None and v.shape.rank() >= 1]
    names = [v.shape[0].value for v in shaped if isinstance(v.shape[0], ir.SymbolicDim)]
    name = symbol or next((n for n in names if n), BATCH_DIM)
    renamed = []
    for value in shaped:
        dim = value.shape[0]
        if _unnamed(dim) or (isinstance(dim, ir.SymbolicDim) and dim.value != name):
            value.shape = ir.Shape([ir.SymbolicDim(name), *list(value.shape)[1:]])
            if isinstance(dim, ir.SymbolicDim):
                was = repr(dim.value) if dim.value else "unnamed"
            else:
                was = str(dim)
            renamed.append(f"{value.name!r}: dim 0 {was} -> {name!r}")
    if not renamed:
        return model, ()
    return ir.serde.serialize_model(model_ir), tuple(renamed)
