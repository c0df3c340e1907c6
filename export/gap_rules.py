"""The rewrite rules of the GAP lowering (`onnxedge.export.gap`): each spelling of "average over
H and W" an exporter writes (``ReduceMean`` over the spatial axes of an NCHW tensor, or of an
NHWC one; ``AveragePool`` with one window over the map) as an onnxscript rewrite rule whose
``check`` says why a node is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchContext, MatchResult, RewriteRuleClassBase, RewriteRuleSet

# Called by a rule once its replacement is built: (original node, rule name, detail for humans).
RewriteCallback = Callable[[ir.Node, str, str], None]

_POOLED_RANK = 4  # NCHW: the only rank at which a ReduceMean is taken to be a spatial average
_NHWC = [0, 2, 3, 1]  # the perm of a Transpose from NCHW to NHWC
# Ops whose output is laid out as their full-size operands: a channels-last operand gives a
# channels-last output (broadcast constants and per-channel parameters aside; a quantized graph's
# QuantizeLinear/DequantizeLinear pairs, per tensor or along an axis, too).
_ELEMENTWISE = frozenset(
    {
        *("Identity", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Clip", "Sigmoid"),
        *("HardSigmoid", "HardSwish", "Tanh", "Gelu", "Erf", "Softplus", "Mish", "Neg", "Abs"),
        *("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean"),
        *("QuantizeLinear", "DequantizeLinear"),
    }
)
_WALK_LIMIT = 256  # values looked at before the layout is called unknown

# GlobalAveragePool's type constraint T; bfloat16 joins at opset 22.
_GAP_DTYPES = frozenset({ir.DataType.FLOAT16, ir.DataType.FLOAT, ir.DataType.DOUBLE})
_GAP_BFLOAT16_OPSET = 22


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

    def _pool(
        self, op, x: ir.Value, mean: ir.Value, *, channels_last: bool | str = False, how: str = ""
    ):
        """``GlobalAveragePool(x)`` in place of the reduction giving ``mean``, in its shape:
        ``keepdims=0`` flattened to [N, C] (Flatten needs no axes input, so it is the same at
        every opset); ``keepdims`` 1 as it is, or transposed back to [N, 1, 1, C] where the mean
        was channels-last (a string: how it was, for the report). ``how``: the report's first
        words (a sum's divisor)."""
        node = mean.producer()
        assert node is not None
        name = node.name or None
        pooled = op.GlobalAveragePool(x, _name=name)
        words = [how] if how else []
        if channels_last:
            words.append(channels_last if isinstance(channels_last, str) else "channels-last")
        prefix = "".join(f"{w}, " for w in words)
        if not node.attributes.get_int("keepdims", 1):
            self._report(node, f"{prefix}keepdims=0, +Flatten")
            return op.Flatten(pooled, axis=1, _name=f"{name}_flatten" if name else None)
        if not channels_last:
            self._report(node, f"{prefix}keepdims=1")
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
        if perm is None or list(perm.as_ints()) != _NHWC:
            return result.fail("not a Transpose from NCHW to NHWC (perm [0, 2, 3, 1])")
        if why := _nhwc_spatial_axes(node):
            return result.fail(why)
        return _check_gap_dtype(context, x, result)

    def rewrite(self, op, x: ir.Value, nhwc: ir.Value, mean: ir.Value):
        return self._pool(op, x, mean, channels_last=True)


class ElementwiseChannelsLastReduceMeanToGlobalAveragePool(_GapRule):
    """``ReduceMean`` over axes 1 and 2 of a tensor computed from Transposes to NHWC by
    elementwise ops alone (`_not_channels_last`: jax2onnx wraps every Conv in a Transpose pair
    and adds a residual block's branches, then its ReLU, in NHWC) → ``GlobalAveragePool`` of the
    tensor transposed back to NCHW; ``keepdims=0`` flattened to [N, C], ``keepdims`` 1
    transposed back to [N, 1, 1, C]."""

    def pattern(self, op, t):
        return op.ReduceMean(t, _allow_other_inputs=True, _outputs=["mean"])

    def check(self, context: MatchContext, t: ir.Value, mean: ir.Value) -> MatchResult:
        result = MatchResult()
        node = context.root
        if why := self._out_of_scope(node):
            return result.fail(why)
        if why := _nhwc_spatial_axes(node):
            return result.fail(why)
        producer = t.producer()
        if producer is not None and producer.op_type == "Transpose":
            return result.fail("a Transpose's own output (ChannelsLastReduceMean's case)")
        if why := _not_channels_last(t):
            return result.fail(why)
        return _check_gap_dtype(context, t, result)

    def rewrite(self, op, t: ir.Value, mean: ir.Value):
        node = mean.producer()
        name = f"{node.name}_nchw" if node is not None and node.name else None
        nchw = op.Transpose(t, perm=[0, 3, 1, 2], _name=name)
        how = "channels-last by elementwise ops, +Transpose to NCHW"
        return self._pool(op, nchw, mean, channels_last=how)


class ReduceSumDivToGlobalAveragePool(_GapRule):
    """``ReduceSum`` over H and W divided by the map's H x W (``Div`` by the count, as Flax
    Linen's ``x.mean(axis=(1, 2))`` reaches jax2onnx, or ``x.sum((2, 3)) / (h * w)`` in torch) →
    ``GlobalAveragePool``: of an NCHW tensor (axes 2 and 3), or of a channels-last one (axes 1
    and 2, `_not_channels_last`) transposed back to NCHW; flattened (``keepdims=0``) or in the
    sum's shape. The divisor is one constant equal to H x W, both static."""

    _sign = "/"

    def pattern(self, op, x, count):
        total = op.ReduceSum(x, _allow_other_inputs=True, _outputs=["total"])
        return op.Div(total, count, _outputs=["mean"])

    def _by_count(self, value: float, cells: int) -> bool:
        return bool(np.isclose(value, cells, rtol=1e-6, atol=0))

    def check(self, context: MatchContext, x: ir.Value, count: ir.Value, total, mean):
        result = MatchResult()
        node = total.producer()
        if why := self._out_of_scope(node):
            return result.fail(why)
        if why := _sum_layout(node, x):
            return result.fail(why)
        cells = _cells(node, x)
        if cells is None:
            return result.fail(f"H and W of {x.name!r} are not static")
        tensor = ir.convenience.get_const_tensor(count)
        if tensor is None or np.asarray(tensor.numpy()).size != 1:
            return result.fail(f"the divisor {count.name!r} is not one constant")
        value = float(np.asarray(tensor.numpy()).reshape(-1)[0])
        if not self._by_count(value, cells):
            return result.fail(f"the divisor {value:g} is not the map's {cells} cells")
        return _check_gap_dtype(context, x, result)

    def rewrite(self, op, x: ir.Value, count: ir.Value, total: ir.Value, mean: ir.Value):
        node = total.producer()
        assert node is not None
        value = float(np.asarray(ir.convenience.get_const_tensor(count).numpy()).reshape(-1)[0])
        how = f"{self._sign} {value:g} after it"
        if _nhwc_spatial_axes(node):  # NCHW: axes 2 and 3
            return self._pool(op, x, total, how=how)
        producer = x.producer()
        if producer is not None and producer.op_type == "Transpose":  # the one to NHWC: undone
            nchw, layout = producer.inputs[0], "channels-last"
        else:
            name = f"{node.name}_nchw" if node.name else None
            nchw = op.Transpose(x, perm=[0, 3, 1, 2], _name=name)
            layout = "channels-last, +Transpose to NCHW"
        return self._pool(op, nchw, total, channels_last=layout, how=how)


class ReduceSumMulToGlobalAveragePool(ReduceSumDivToGlobalAveragePool):
    """The same times one constant equal to 1 / (H x W) (``Mul``, either operand order)."""

    _sign = "*"

    def pattern(self, op, x, count):
        total = op.ReduceSum(x, _allow_other_inputs=True, _outputs=["total"])
        return op.Mul(total, count, _outputs=["mean"])

    def _by_count(self, value: float, cells: int) -> bool:
        return bool(np.isclose(value * cells, 1.0, rtol=1e-6, atol=0))


def _sum_layout(node: ir.Node, x: ir.Value) -> str:
    """Why the ReduceSum ``node`` of ``x`` is not over H and W of an NCHW tensor, or of a
    channels-last one (``""``: it is)."""
    if x.shape is None or x.shape.rank() != _POOLED_RANK:
        return f"{x.name!r} is not known to be of rank 4"
    if node.attributes.get_int("noop_with_empty_axes", 0):
        return "noop_with_empty_axes=1"
    axes = _reduce_axes(node)
    if isinstance(axes, str):
        return axes
    if sorted(a % _POOLED_RANK for a in axes) == [2, 3] and all(-4 <= a < 4 for a in axes):
        return ""
    if _nhwc_spatial_axes(node):
        return f"axes {axes} are not the spatial axes of NCHW (2, 3) or of NHWC (1, 2)"
    return _not_channels_last(x)


def _cells(node: ir.Node, x: ir.Value) -> int | None:
    """H x W of the map the sum reduces, where both are static."""
    assert x.shape is not None
    axes = _reduce_axes(node)
    assert not isinstance(axes, str)
    dims = [x.shape[a % _POOLED_RANK] for a in axes]
    if not all(isinstance(d, int) for d in dims):
        return None
    return int(np.prod(dims))


def _nhwc_spatial_axes(node: ir.Node) -> str:
    """Why the ReduceMean ``node`` does not reduce exactly axes 1 and 2 of a rank-4 tensor
    (``""``: it does)."""
    axes = _reduce_axes(node)
    if isinstance(axes, str):
        return axes
    if sorted(a % _POOLED_RANK for a in axes) != [1, 2] or any(not -4 <= a < 4 for a in axes):
        return f"axes {axes} are not exactly NHWC's spatial axes (1, 2)"
    return ""


def _not_channels_last(value: ir.Value) -> str:
    """Why ``value`` is not known to be channels-last (``""``: it is, being a Transpose from NCHW
    to NHWC, perm [0, 2, 3, 1], or computed from such Transposes by elementwise ops alone, every
    non-constant operand on the way leading to one)."""
    if value.shape is not None and value.shape.rank() != _POOLED_RANK:
        return f"input has rank {value.shape.rank()}, not 4"
    queue, seen, transposes = [value], {value}, 0
    while queue:
        if len(seen) > _WALK_LIMIT:
            return f"more than {_WALK_LIMIT} values between {value.name!r} and its layout"
        current = queue.pop(0)
        node = current.producer()
        if node is None:
            return f"{current.name!r} is a graph input, not a Transpose from NCHW to NHWC"
        if node.op_type == "Transpose" and node.domain in ("", "ai.onnx"):
            perm = node.attributes.get("perm")
            if perm is None or list(perm.as_ints()) != _NHWC:
                return "not a Transpose from NCHW to NHWC (perm [0, 2, 3, 1])"
            transposes += 1
        elif _elementwise(node):
            for operand in _operands(node):
                if operand not in seen:
                    seen.add(operand)
                    queue.append(operand)
        else:
            return f"{current.name!r} comes from a {node.op_type}, not a Transpose to NHWC"
    return "" if transposes else f"{value.name!r} is computed from constants alone"


def _elementwise(node: ir.Node) -> bool:
    return node.op_type in _ELEMENTWISE and node.domain in ("", "ai.onnx")


def _operands(node: ir.Node) -> list[ir.Value]:
    """The inputs of ``node`` that are computed, not constants (a bias, a clip bound)."""
    return [
        v
        for v in node.inputs
        if v is not None and not v.is_initializer() and ir.convenience.get_const_tensor(v) is None
    ]


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
            ElementwiseChannelsLastReduceMeanToGlobalAveragePool.rule(
                on_rewrite=on_rewrite, only=only
            ),
            ReduceSumDivToGlobalAveragePool.rule(on_rewrite=on_rewrite, only=only),
            ReduceSumMulToGlobalAveragePool.rule(on_rewrite=on_rewrite, only=only),
            AveragePoolToGlobalAveragePool.rule(on_rewrite=on_rewrite, only=only),
        ],
        commute=True,  # a Mul's constant on either side
    )
