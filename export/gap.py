"""Canonicalise every global spatial average of a CNN head into ONNX ``GlobalAveragePool``.

Exporters spell "average over H and W" in several ways (``ReduceMean`` with attribute or input
axes, ``AveragePool`` with a kernel as large as the feature map, ``GlobalAveragePool``). Edge
runtimes and later passes handle ``GlobalAveragePool`` best, so this pass rewrites the others into
it, with onnxscript rewrite rules applied by an ``onnx_ir`` pass.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as ir_common_passes
from onnxscript.rewriter import MatchContext, MatchResult, RewriteRuleClassBase, RewriteRuleSet

from onnxedge.runtime.errors import OnnxEdgeError

__all__ = [
    "GAP_SCOPES",
    "CanonicalizeGapHeadPass",
    "GapResult",
    "GapRewrite",
    "canonicalize_gap_head",
    "gap_rules",
]

logger = logging.getLogger(__name__)

# Called by a rule once its replacement is built: (original node, rule name, detail for humans).
RewriteCallback = Callable[[ir.Node, str, str], None]

_POOLED_RANK = 4  # NCHW: the only rank at which a ReduceMean is taken to be a spatial average

# Which global means become GlobalAveragePool: only the classifier head's (the one `onnxedge
# check` names), or every one (squeeze-excitation blocks too). ONNX Runtime's CPU
# GlobalAveragePool sums a large map less accurately than its ReduceMean (docs/EXPORT.md).
GAP_HEAD, GAP_ALL = "head", "all"
GAP_SCOPES = (GAP_HEAD, GAP_ALL)
DEFAULT_GAP_SCOPE = GAP_HEAD

# GlobalAveragePool's type constraint T; bfloat16 joins at opset 22.
_GAP_DTYPES = frozenset({ir.DataType.FLOAT16, ir.DataType.FLOAT, ir.DataType.DOUBLE})
_GAP_BFLOAT16_OPSET = 22


@dataclasses.dataclass(frozen=True)
class GapRewrite:
    """One node that was rewritten into ``GlobalAveragePool``."""

    node: str  # name of the original node, or "<op_type>#<index in its graph>" if it had none
    op_type: str  # "ReduceMean" or "AveragePool"
    rule: str  # name of the rule class that rewrote it
    detail: str = ""  # e.g. "keepdims=0, +Flatten" or "kernel 8x8"

    def __str__(self) -> str:
        suffix = f" ({self.detail})" if self.detail else ""
        return f"{self.op_type} '{self.node}' -> GlobalAveragePool{suffix}"


@dataclasses.dataclass(frozen=True)
class GapResult:
    """The model after :func:`canonicalize_gap_head` and the rewrites that were made."""

    model: onnx.ModelProto
    rewrites: tuple[GapRewrite, ...]

    @property
    def modified(self) -> bool:
        return bool(self.rewrites)


def _check_gap_dtype(context: MatchContext, x: ir.Value, result: MatchResult) -> MatchResult:
    dtype = x.dtype
    if dtype is None:
        return result.fail(f"element type of {x.name!r} is unknown")
    opset = context.model.graph.opset_imports.get("", 0)
    if dtype in _GAP_DTYPES or (dtype == ir.DataType.BFLOAT16 and opset >= _GAP_BFLOAT16_OPSET):
        return result
    return result.fail(f"GlobalAveragePool (opset {opset}) does not accept {dtype.name}")


class _GapRule(RewriteRuleClassBase):
    """Shared plumbing: report each applied rewrite to the owner of the rule set."""

    def __init__(
        self, on_rewrite: RewriteCallback | None = None, only: frozenset[str] | None = None
    ) -> None:
        super().__init__()
        self._on_rewrite = on_rewrite
        self._only = only  # the output tensors of the means to rewrite; None: every one

    def _out_of_scope(self, node: ir.Node) -> str:
        """Why ``node`` is not to be rewritten whatever its form (``""``: it may be)."""
        if self._only is None or node.outputs[0].name in self._only:
            return ""
        return "not the classifier head's pool (the lowering's scope is the head)"

    def _report(self, node: ir.Node, detail: str) -> None:
        if self._on_rewrite is not None:
            self._on_rewrite(node, self.name, detail)

    def _pool(self, op, x: ir.Value, mean: ir.Value, *, channels_last: bool = False):
        """``GlobalAveragePool(x)`` in place of the ``ReduceMean`` giving ``mean``, in its
        shape: ``keepdims=0`` flattened to [N, C] (Flatten needs no axes input, so it is the
        same at every opset); ``keepdims`` 1 as it is, or transposed back to [N, 1, 1, C] where
        the mean was channels-last."""
        node = mean.producer()
        assert node is not None
        name = node.name or None
        pooled = op.GlobalAveragePool(x, _name=name)
        prefix = "channels-last, " if channels_last else ""
        if not node.attributes.get_int("keepdims", 1):
            self._report(node, f"{prefix}keepdims=0, +Flatten")
            return op.Flatten(pooled, axis=1, _name=f"{name}_flatten" if name else None)
        if not channels_last:
            self._report(node, "keepdims=1")
            return pooled
        self._report(node, f"{prefix}keepdims=1, +Transpose")
        return op.Transpose(pooled, perm=[0, 2, 3, 1], _name=f"{name}_nhwc" if name else None)


class ReduceMeanToGlobalAveragePool(_GapRule):
    """``ReduceMean`` over H and W of a rank-4 NCHW tensor → ``GlobalAveragePool``.

    Handles case 1. of :class:`CanonicalizeGapHeadPass`: axes as an attribute (opset < 18) or as
    a constant input (opset >= 18), negative or positive, in any order; ``keepdims`` 1 or absent
    gives ``GlobalAveragePool(x)``, ``keepdims=0`` gives ``Flatten(GlobalAveragePool(x), axis=1)``.
    Only rank 4 is accepted: a ``ReduceMean`` over the last axis of a rank-3 tensor is a
    LayerNorm-style mean, not a pooling head, and must stay recognisable to other fusions.
    """

    def pattern(self, op, x):
        # The axes input (opset >= 18) is optional, so it is read from the node in `check`.
        return op.ReduceMean(x, _allow_other_inputs=True, _outputs=["mean"])

    def check(self, context: MatchContext, x: ir.Value, mean: ir.Value) -> MatchResult:
        result = MatchResult()
        node = context.root
        if why := self._out_of_scope(node):
            return result.fail(why)
        if x.shape is None:  # case 1. needs the rank to normalise negative axes
            return result.fail(f"rank of {x.name!r} is unknown, so its axes cannot be normalised")
        rank = x.shape.rank()
        if rank != _POOLED_RANK:
            return result.fail(f"input has rank {rank}, not 4 (NCHW)")
        axes = _reduce_axes(node)
        if isinstance(axes, str):
            return result.fail(axes)
        if not axes:
            # Empty axes: reduce everything (N and C too), or an identity with noop_with_empty_axes.
            if node.attributes.get_int("noop_with_empty_axes", 0):
                return result.fail("empty axes with noop_with_empty_axes=1 is an identity")
            return result.fail("empty axes reduce over all axes, including N and C")
        if any(not -rank <= a < rank for a in axes):
            return result.fail(f"axes {axes} out of range for rank {rank}")
        normalised = sorted(a % rank for a in axes)
        if normalised != [2, 3]:  # case 3.: channels, one spatial axis, or N as well
            return result.fail(f"axes {axes} are not exactly the spatial axes (2, 3)")
        return _check_gap_dtype(context, x, result)

    def rewrite(self, op, x: ir.Value, mean: ir.Value):
        return self._pool(op, x, mean)


class ChannelsLastReduceMeanToGlobalAveragePool(_GapRule):
    """``ReduceMean`` over H and W of an NCHW tensor transposed to NHWC (``Transpose(x, perm=[0,
    2, 3, 1])``, then axes 1 and 2: Keras's ``GlobalAveragePooling2D`` as tf2onnx writes it) →
    ``GlobalAveragePool(x)``: ``keepdims=0`` flattened to [N, C], as the mean gave; ``keepdims``
    1 transposed back to [N, 1, 1, C]. The Transpose stays where something else reads it."""

    def pattern(self, op, x):
        nhwc = op.Transpose(x, _outputs=["nhwc"])
        return op.ReduceMean(nhwc, _allow_other_inputs=True, _outputs=["mean"])

    def check(self, context: MatchContext, x: ir.Value, nhwc: ir.Value, mean: ir.Value):
        result = MatchResult()
        node = context.root
        if why := self._out_of_scope(node):
            return result.fail(why)
        transpose = nhwc.producer()
        perm = transpose.attributes.get("perm") if transpose is not None else None
        if perm is None or list(perm.as_ints()) != [0, 2, 3, 1]:
            return result.fail("not a Transpose from NCHW to NHWC (perm [0, 2, 3, 1])")
        axes = _reduce_axes(node)
        if isinstance(axes, str):
            return result.fail(axes)
        if sorted(a % _POOLED_RANK for a in axes) != [1, 2] or any(not -4 <= a < 4 for a in axes):
            return result.fail(f"axes {axes} are not exactly NHWC's spatial axes (1, 2)")
        return _check_gap_dtype(context, x, result)

    def rewrite(self, op, x: ir.Value, nhwc: ir.Value, mean: ir.Value):
        return self._pool(op, x, mean, channels_last=True)


def _reduce_axes(node: ir.Node) -> list[int] | str:
    """The axes of a ReduceMean node, or why they cannot be known statically."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:  # opset >= 18
        axes_value = node.inputs[1]
        if axes_value.is_graph_input():
            return f"axes {axes_value.name!r} is a graph input, so it can change at run time"
        tensor = ir.convenience.get_const_tensor(axes_value)
        if tensor is None:  # case 3.: non-constant axes
            return f"axes {axes_value.name!r} is not a constant"
        return [int(a) for a in np.asarray(tensor.numpy()).reshape(-1)]
    axes_attr = node.attributes.get("axes")  # opset < 18
    if axes_attr is None:
        return []
    return list(axes_attr.as_ints())


class AveragePoolToGlobalAveragePool(_GapRule):
    """``AveragePool`` with one window over the whole static spatial extent → GlobalAveragePool.

    Handles case 2. of :class:`CanonicalizeGapHeadPass`. With no padding and a kernel equal to the
    input's spatial dims the output is 1x1 whatever the strides and ceil_mode, and
    count_include_pad has no padding to count. A padded one is the same mean where its only
    window covers the map and the padding is left out of the divisor (count_include_pad 0): Caffe's
    GoogLeNet pools its 6x6 map with a 7x7 kernel and pads [0, 0, 1, 1] (`_one_window`).
    """

    def pattern(self, op, x):
        return op.AveragePool(x, _outputs=["pooled"])

    def check(self, context: MatchContext, x: ir.Value, pooled: ir.Value) -> MatchResult:
        result = MatchResult()
        node = context.root
        if why := self._out_of_scope(node):
            return result.fail(why)
        if x.shape is None:
            return result.fail(f"shape of {x.name!r} is unknown")
        spatial = list(x.shape.dims[2:])
        if not spatial:
            return result.fail(f"input has rank {x.shape.rank()}, no spatial axes")
        if not all(isinstance(d, int) for d in spatial):  # case 3.: dynamic H or W
            return result.fail(f"spatial dims {[str(d) for d in spatial]} are not all static")
        kernel = list(node.attributes.get_ints("kernel_shape", []))
        if len(kernel) != len(spatial):
            return result.fail(f"kernel {kernel} does not match the spatial rank {len(spatial)}")
        dilations = list(node.attributes.get_ints("dilations", []))
        if any(d != 1 for d in dilations):
            return result.fail(f"dilations {dilations} are not all one")
        strides = list(node.attributes.get_ints("strides", [1] * len(spatial)))
        if len(strides) != len(spatial):
            return result.fail(f"strides {strides} do not match the spatial rank {len(spatial)}")
        auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
        pads = [0] * (2 * len(spatial))
        if auto_pad.startswith("SAME"):
            if kernel != spatial:  # case 3.: SAME keeps the map's size
                return result.fail(f"auto_pad={auto_pad} with kernel {kernel} on {spatial}")
            # SAME pads (ceil(d / s) - 1) * s + k - d = (ceil(d / s) - 1) * s here: zero iff s >= d.
            if any(s < d for s, d in zip(strides, spatial, strict=True)):
                return result.fail(f"auto_pad={auto_pad} with strides {strides} pads the input")
        elif auto_pad == "NOTSET":
            pads = list(node.attributes.get_ints("pads", pads))
        elif auto_pad != "VALID":
            return result.fail(f"unknown auto_pad={auto_pad}")
        if why := _one_window(
            spatial,
            kernel,
            pads,
            strides,
            ceil_mode=bool(node.attributes.get_int("ceil_mode", 0)),
            count_include_pad=bool(node.attributes.get_int("count_include_pad", 0)),
        ):
            return result.fail(why)  # case 3.: partial pooling, or padding averaged in
        return _check_gap_dtype(context, x, result)

    def rewrite(self, op, x: ir.Value, pooled: ir.Value):
        node = pooled.producer()
        assert node is not None
        kernel = node.attributes.get_ints("kernel_shape", [])
        detail = "kernel " + "x".join(str(k) for k in kernel)
        pads = list(node.attributes.get_ints("pads", []))
        if any(pads) and node.attributes.get_string("auto_pad", "NOTSET") == "NOTSET":
            assert x.shape is not None
            spatial = "x".join(str(d) for d in x.shape.dims[2:])
            detail += f", pads {pads} outside the {spatial} map, not counted"
        self._report(node, detail)
        return op.GlobalAveragePool(x, _name=node.name or None)


def _one_window(
    spatial: Sequence[int],
    kernel: Sequence[int],
    pads: Sequence[int],
    strides: Sequence[int],
    *,
    ceil_mode: bool,
    count_include_pad: bool,
) -> str:
    """Why an ``AveragePool`` of these attributes on a map of size ``spatial`` is not the map's
    mean (``""``: it is). Along each axis of size d, with kernel k, pads b (begin) and e (end),
    stride s: exactly one window, (d + b + e - k) / s rounded down (up with ceil_mode) + 1 = 1;
    it covers the whole map, b >= 0 and k - b >= d; and it averages the map's d cells only, which
    count_include_pad 1 breaks wherever the window reaches into the padding (k > d)."""
    rank = len(spatial)
    where = f"kernel {list(kernel)}, pads {list(pads)}, strides {list(strides)}"
    if len(pads) != 2 * rank or any(p < 0 for p in pads):
        return f"pads {list(pads)} are not {2 * rank} non-negative numbers"
    for axis, (d, k, s) in enumerate(zip(spatial, kernel, strides, strict=True)):
        begin, end = pads[axis], pads[axis + rank]
        if k - begin < d:
            return f"{where} do not cover the map {list(spatial)}"
        span = d + begin + end - k
        windows = (-(-span // s) if ceil_mode else span // s) + 1 if span >= 0 else 0
        if windows != 1:
            return f"{where} give {windows} windows along axis {axis + 2} of {list(spatial)}, not 1"
        if count_include_pad and k != d:
            return f"count_include_pad=1 averages the padding {list(pads)} in"
    return ""


def gap_rules(
    *, on_rewrite: RewriteCallback | None = None, only: frozenset[str] | None = None
) -> RewriteRuleSet:
    """The rule set of :class:`CanonicalizeGapHeadPass` (cases 1. and 2.).

    ``on_rewrite`` is called with (original node, rule name, detail) for each rewrite; ``only``:
    the output tensors of the means that may be rewritten (None: every one).
    """
    return RewriteRuleSet(
        [
            ReduceMeanToGlobalAveragePool.rule(on_rewrite=on_rewrite, only=only),
            ChannelsLastReduceMeanToGlobalAveragePool.rule(on_rewrite=on_rewrite, only=only),
            AveragePoolToGlobalAveragePool.rule(on_rewrite=on_rewrite, only=only),
        ]
    )


class CanonicalizeGapHeadPass(ir.passes.InPlacePass):
    """Rewrite every global spatial average into ``GlobalAveragePool``.

    1. ``ReduceMean`` over exactly the two spatial axes of a rank-4 NCHW tensor, with constant
       axes given as an attribute (opset < 18) or an input (opset >= 18), negative or positive, in
       any order. ``keepdims`` 1 or absent → ``GlobalAveragePool(x)``; ``keepdims=0`` →
       ``Flatten(GlobalAveragePool(x), axis=1)``. A following Flatten/Reshape stays as it is.
       The same over axes 1 and 2 of ``Transpose(x, perm=[0, 2, 3, 1])`` (an NHWC mean, as
       tf2onnx writes Keras's GlobalAveragePooling2D) → ``GlobalAveragePool(x)``, flattened
       (``keepdims=0``) or transposed back to NHWC.
    2. ``AveragePool`` whose ``kernel_shape`` equals the static spatial dims of its input, with no
       padding (pads zero; auto_pad NOTSET, VALID, or SAME_* with strides >= the dims, which pads
       nothing) and no dilation → ``GlobalAveragePool(x)``, whatever the strides and ceil_mode;
       and a padded one whose only window covers the whole map with the padding left out of the
       mean (count_include_pad 0), as Caffe's GoogLeNet writes its head.
    3. Everything else is left alone: partial ``AveragePool``, a padded one with more than one
       window or the padding counted, ``AveragePool`` on a dynamic H or W, ``ReduceMax``,
       ``ReduceMean`` over channels, over one spatial axis, over non-constant axes, with empty
       axes, or on a tensor of unknown rank.

    The rules read shapes from the IR: run shape inference first (as
    :func:`canonicalize_gap_head` does), or nothing of unknown rank is rewritten. Axes constants
    and initializers left without users are removed. ``rewrites`` holds what the latest call did.
    ``only``: the output tensors of the means that may be rewritten (None: every one).
    """

    def __init__(self, only: frozenset[str] | None = None) -> None:
        super().__init__()
        self.rewrites: tuple[GapRewrite, ...] = ()
        self._only = only

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        labels = _node_labels(model)
        rewrites: list[GapRewrite] = []
        axes_values: list[ir.Value] = []

        def record(node: ir.Node, rule: str, detail: str) -> None:
            label = labels.get(node) or f"{node.op_type}#?"
            rewrites.append(GapRewrite(label, node.op_type, rule, detail))
            axes_values.extend(v for v in node.inputs[1:] if v is not None)

        gap_rules(on_rewrite=record, only=self._only).apply_to_model(model)
        _remove_dead_constants(axes_values)
        for rewrite in rewrites:
            logger.info("%s", rewrite)
        self.rewrites = tuple(rewrites)
        return ir.passes.PassResult(model, modified=bool(rewrites))


def _node_labels(model: ir.Model) -> dict[ir.Node, str]:
    """Name of each node, or "<op_type>#<index>" for the unnamed, taken before any rewrite."""
    labels: dict[ir.Node, str] = {}
    for graph in model.graphs():
        for index, node in enumerate(graph):
            labels[node] = node.name or f"{node.op_type}#{index}"
    return labels


def _remove_dead_constants(values: Sequence[ir.Value]) -> None:
    """Drop the Constant nodes and initializers behind ``values`` that lost their last user."""
    for value in values:
        if value.uses() or value.is_graph_output() or value.is_graph_input():
            continue
        producer = value.producer()
        if producer is not None:
            if (
                producer.op_type == "Constant"
                and producer.domain in ("", "ai.onnx")
                and producer.graph is not None
                and not any(out.uses() or out.is_graph_output() for out in producer.outputs)
            ):
                producer.graph.remove(producer, safe=True)
        elif value.is_initializer() and value.graph is not None and value.name:
            value.graph.initializers.pop(value.name, None)


@dataclasses.dataclass(frozen=True)
class _ValueInfo:
    type: ir.TypeProtocol | None
    shape: ir.Shape | None


class _ValueInfoSnapshot:
    """Types and shapes as they were before shape inference, to be put back after the rewrite.

    Shape inference is only a means to decide; the returned model keeps the input's value_info
    (a symbolic batch dim included) and gains none.
    """

    def __init__(self, model: ir.Model) -> None:
        self._values: dict[ir.Value, _ValueInfo] = {}
        self._outputs: dict[ir.Graph, list[_ValueInfo]] = {}
        for graph in model.graphs():
            for value in _graph_values(graph):
                self._values[value] = _ValueInfo(value.type, value.shape)
            self._outputs[graph] = [_ValueInfo(v.type, v.shape) for v in graph.outputs]

    def restore(self, model: ir.Model) -> None:
        for graph in model.graphs():
            for value in _graph_values(graph):
                info = self._values.get(value, _ValueInfo(None, None))
                value.type, value.shape = info.type, info.shape
            # A rewrite may have replaced a graph output by a new value: restore by position.
            for value, info in zip(graph.outputs, self._outputs[graph], strict=True):
                value.type, value.shape = info.type, info.shape


def _graph_values(graph: ir.Graph) -> list[ir.Value]:
    values = [*graph.inputs, *graph.initializers.values()]
    for node in graph:
        values.extend(out for out in node.outputs if out is not None)
    return values


def head_pools(model: onnx.ModelProto) -> frozenset[str]:
    """The output tensors of the ops that pool the last feature map into the classifier, as
    `onnxedge check` finds them (`onnxedge.runtime.check.head.find_head`)."""
    from onnxedge.runtime.check.head import find_head, tensor_ranks

    inferred = onnx.shape_inference.infer_shapes(model)
    head = find_head(inferred.graph, tensor_ranks(inferred))
    return frozenset(node.output[0] for node in head.pools)


def canonicalize_gap_head(model: onnx.ModelProto, scope: str = DEFAULT_GAP_SCOPE) -> GapResult:
    """Apply :class:`CanonicalizeGapHeadPass` to a proto; the input proto is not modified.
    ``scope``: ``head`` rewrites the head's pool only (`head_pools`), ``all`` every global mean.

    Runs ONNX shape inference first so that ranks and static H, W are known (exported and
    simplified models often carry no value_info), then restores the original value_info.
    """
    if scope not in GAP_SCOPES:
        raise OnnxEdgeError(f"unknown GAP lowering scope {scope!r}; expected head or all")
    only = head_pools(model) if scope == GAP_HEAD else None
    model_ir = ir.serde.deserialize_model(model)
    snapshot = _ValueInfoSnapshot(model_ir)
    ir_common_passes.ShapeInferencePass(strict_mode=False)(model_ir)
    gap_pass = CanonicalizeGapHeadPass(only)
    gap_pass(model_ir)
    snapshot.restore(model_ir)
    return GapResult(model=ir.serde.serialize_model(model_ir), rewrites=gap_pass.rewrites)
