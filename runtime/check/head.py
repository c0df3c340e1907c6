"""The head of an ONNX image classifier: the pool that reduces the last feature map's spatial dims
on the way to the output, the classifier after it, and the pre-logits layers between them.

`find_head` walks upstream from the graph's first output through every data input (a depth-first
walk, so a branch that joins again, as hard-swish ``x * relu6(x + 3) / 6`` does, is followed on
both sides) and stops on each path at the first op that pools over H and W. On the way it accepts

1. shape-only ops (flatten, reshape, squeeze, transpose, concat, cast, identity, dropout, a
   Gather of constant indices along an axis other than the batch) and the
   QuantizeLinear/DequantizeLinear pairs of a quantised graph, of which only the data input is
   followed (a Reshape's shape input is not);
2. activations and elementwise arithmetic (ReLU, hard-swish as one op or as Add/Clip/Mul/Div,
   SiLU as Sigmoid and Mul, GELU as Erf, Mul and Add, softmax), normalisations (BatchNorm,
   LayerNorm, also as its ReduceMean/Sub/Pow/Sqrt/Div decomposition over the channel axis);
3. linear layers: Gemm, MatMul, and Conv with a 1x1 kernel. The one nearest the output is the
   classifier; the others are pre-logits layers (MobileNetV3: pool, 1x1 conv, hard-swish,
   classifier).

Anything else on a path (a 3x3 Conv, a graph input, an op not listed) stops the walk there: the
head does not pool the feature map, it reads it some other way. `onnxedge check` turns the result
into its ``gap_head`` line.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable

import onnx

from onnxedge.runtime.errors import OnnxEdgeError

# 1. Shape-only ops, with the positions of their data inputs (None: every input).
SHAPE_OPS: dict[str, tuple[int, ...] | None] = {
    "Identity": (0,),
    "Flatten": (0,),
    "Reshape": (0,),
    "Squeeze": (0,),
    "Unsqueeze": (0,),
    "Transpose": (0,),
    "Cast": (0,),
    "Dropout": (0,),
    "Expand": (0,),
    "Concat": None,
    # A quantised (QDQ) graph wraps tensors in QuantizeLinear/DequantizeLinear pairs: the walk
    # looks through them to the ops they wrap (input 0 is the data; scale and zero point are not).
    "QuantizeLinear": (0,),
    "DequantizeLinear": (0,),
}
# 2. Activations, arithmetic and normalisations (data inputs: every non-constant input, or input 0).
_ELEMENTWISE: dict[str, tuple[int, ...] | None] = {
    **dict.fromkeys(
        (
            "Relu",
            "LeakyRelu",
            "Elu",
            "Selu",
            "Celu",
            "Sigmoid",
            "HardSigmoid",
            "HardSwish",
            "Tanh",
            "Gelu",
            "Erf",
            "Softplus",
            "Softsign",
            "Mish",
            "Softmax",
            "LogSoftmax",
            "Neg",
            "Exp",
            "Log",
            "Sqrt",
            "Reciprocal",
            "Abs",
        ),
        (0,),
    ),
    "Clip": (0,),
    "PRelu": (0,),
    "BatchNormalization": (0,),
    "LayerNormalization": (0,),
    **dict.fromkeys(("Add", "Sub", "Mul", "Div", "Pow", "Min", "Max", "Sum", "Mean"), None),
}
# The activations and normalizations of one data input (a classifier's own, before a pool).
ACTIVATIONS = frozenset(op for op, positions in _ELEMENTWISE.items() if positions == (0,))
# 3. Linear layers: the classifier and pre-logits layers.
_LINEAR = ("Gemm", "MatMul", "Conv")
# Ops that reduce H and W (ReduceMean/ReduceMax/ReduceSum only when their axes are spatial).
POOL_OPS = frozenset(
    {
        "GlobalAveragePool",
        "GlobalMaxPool",
        "GlobalLpPool",
        "AveragePool",
        "MaxPool",
        "LpPool",
        "ReduceMean",
        "ReduceMax",
        "ReduceSum",
        "ReduceL2",
    }
)
_REDUCE = ("ReduceMean", "ReduceMax", "ReduceSum", "ReduceL2")
_RANK_NCHW = 4


class GraphCycleError(OnnxEdgeError):
    """A walk through the graph came back to a node: the graph has a cycle."""

    def __init__(self, node: onnx.NodeProto) -> None:
        super().__init__(f"the graph has a cycle through {node.op_type} node {node.name!r}")
        self.node = node


def producers_of(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def _data_inputs(node: onnx.NodeProto, initializers: set[str]) -> list[str]:
    return [i for i in node.input if i and i not in initializers]


def walk_back(
    start: str,
    producers: dict[str, onnx.NodeProto],
    initializers: set[str],
    through: Iterable[str],
    stop: Iterable[str] = (),
) -> onnx.NodeProto | None:
    """Follow the data input upstream from tensor ``start`` through ``through`` ops to the first
    op in ``stop`` or not in ``through``; None where the walk reaches a graph input.

    A graph with a cycle (invalid ONNX, but files can hold anything) raises `GraphCycleError`
    instead of looping forever.
    """
    through, stop = set(through), set(stop)
    seen: set[int] = set()
    tensor = start
    while tensor in producers:
        node = producers[tensor]
        if id(node) in seen:
            raise GraphCycleError(node)
        seen.add(id(node))
        if node.op_type in stop or node.op_type not in through:
            return node
        data = _data_inputs(node, initializers)
        if node.op_type in {"Add", "Mul"} and len(data) != 1:
            return node  # an elementwise op joining two branches: not a bias or scale
        if not data:
            return None
        tensor = data[0]
    return None


@dataclasses.dataclass(frozen=True)
class Stop:
    """Where a path of the walk ended without a pool: a node, or a graph input (node None)."""

    node: onnx.NodeProto | None
    tensor: str
    why: str


@dataclasses.dataclass(frozen=True)
class Head:
    """What the walk from ``output`` found. ``pools``: the pooling ops where the paths ended;
    ``classifier``: the linear layer nearest the output (None where the pool feeds the output
    directly, as in SqueezeNet); ``pre_logits``: the ops between the pools and the classifier;
    ``stops``: where a path ended without a pool."""

    output: str
    pools: tuple[onnx.NodeProto, ...]
    classifier: onnx.NodeProto | None
    pre_logits: tuple[onnx.NodeProto, ...]
    stops: tuple[Stop, ...]


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Initializers, Constant outputs, and what is computed from them alone (graph order, which
    valid ONNX keeps topological)."""
    constants = {i.name for i in graph.initializer}
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in constants for i in inputs)):
            constants.update(o for o in node.output if o)
    return constants


def tensor_ranks(model: onnx.ModelProto | onnx.GraphProto) -> dict[str, int]:
    """The rank of every tensor ONNX shape inference can tell (nothing fails: unknown is absent)."""
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    if isinstance(model, onnx.ModelProto):
        with contextlib.suppress(Exception):  # shape inference is only a help here
            graph = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    ranks: dict[str, int] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor_type.HasField("shape"):
            ranks[value.name] = len(tensor_type.shape.dim)
    for init in graph.initializer:
        ranks[init.name] = len(init.dims)
    return ranks


def _attr(node: onnx.NodeProto, name: str) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def reduce_axes(node: onnx.NodeProto, graph: onnx.GraphProto) -> list[int] | None:
    """A Reduce* node's axes from its attribute (opset < 18) or constant input; None if unknown,
    [] for "every axis"."""
    if len(node.input) > 1 and node.input[1]:
        name = node.input[1]
        for init in graph.initializer:
            if init.name == name:
                return [int(a) for a in onnx.numpy_helper.to_array(init).reshape(-1)]
        for other in graph.node:
            if other.op_type == "Constant" and name in other.output:
                value = _attr(other, "value")
                if isinstance(value, onnx.TensorProto):
                    return [int(a) for a in onnx.numpy_helper.to_array(value).reshape(-1)]
        return None
    axes = _attr(node, "axes")
    return [] if axes is None else [int(a) for a in axes]  # type: ignore[union-attr]


def is_spatial_pool(node: onnx.NodeProto, graph: onnx.GraphProto, ranks: dict[str, int]) -> bool:
    """Whether ``node`` reduces over H or W of an NCHW tensor. A Reduce* over the channel axis of
    a pooled tensor (LayerNorm written out) is not a pool; one of unknown rank or axes is taken
    for one, so that nothing passes unseen."""
    if node.op_type not in POOL_OPS:
        return False
    if node.op_type not in _REDUCE:
        return True
    axes = reduce_axes(node, graph)
    rank = ranks.get(node.input[0])
    if axes is None or rank is None:
        return True
    if not axes:
        return rank >= _RANK_NCHW
    return rank == _RANK_NCHW and any(a % rank in (2, 3) for a in axes)


def conv_kernel(node: onnx.NodeProto, graph: onnx.GraphProto) -> list[int] | None:
    """A Conv's kernel from ``kernel_shape`` or its weight initializer; None if unknown."""
    kernel = _attr(node, "kernel_shape")
    if kernel:
        return [int(k) for k in kernel]  # type: ignore[union-attr]
    for init in graph.initializer:
        if len(node.input) > 1 and init.name == node.input[1]:
            return [int(d) for d in init.dims[2:]]
    return None


def find_head(graph: onnx.GraphProto, ranks: dict[str, int], output: str | None = None) -> Head:
    """Walk back from ``output`` (the first graph output by default) as the module docstring says.

    Raises `GraphCycleError` for a cyclic graph instead of walking forever.
    """
    output = output or graph.output[0].name
    nodes = list(graph.node)  # held: protobuf wrappers keep their id() only while alive
    producers = {out: node for node in nodes for out in node.output if out}
    constants = constant_tensors(graph)
    inputs = {i.name for i in graph.input} - constants
    pools: dict[int, onnx.NodeProto] = {}
    classifier: onnx.NodeProto | None = None
    between: list[onnx.NodeProto] = []
    stops: list[Stop] = []
    state: dict[int, str] = {}  # id(node) -> "open" while its inputs are walked, then "done"

    # An explicit stack of (tensor, below the classifier?, node to close): deep heads must not hit
    # Python's recursion limit, and a node met again while still "open" is a cycle.
    stack: list[tuple[str | None, bool, onnx.NodeProto | None]] = [(output, False, None)]
    while stack:
        tensor, below, closing = stack.pop()
        if closing is not None:
            state[id(closing)] = "done"
            continue
        assert tensor is not None
        node = producers.get(tensor)
        if node is None:
            if tensor in inputs:
                stops.append(Stop(None, tensor, "a graph input"))
            continue
        if state.get(id(node)) == "open":
            raise GraphCycleError(node)
        if state.get(id(node)) == "done":
            continue
        follow = _follow(node, graph, ranks, constants)
        if isinstance(follow, Stop):
            if follow.why == "pool":
                pools[id(node)] = node
            else:
                stops.append(follow)
            state[id(node)] = "done"
            continue
        if below:
            between.append(node)
        elif node.op_type in _LINEAR and classifier is None:
            classifier, below = node, True
        state[id(node)] = "open"
        stack.append((None, below, node))
        stack.extend((name, below, None) for name in reversed(follow))
    order = {id(n): i for i, n in enumerate(nodes)}
    return Head(
        output=output,
        pools=tuple(sorted(pools.values(), key=lambda n: order[id(n)])),
        classifier=classifier,
        pre_logits=tuple(sorted(between, key=lambda n: order[id(n)])),
        stops=tuple(stops),
    )


def _follow(
    node: onnx.NodeProto, graph: onnx.GraphProto, ranks: dict[str, int], constants: set[str]
) -> list[str] | Stop:
    """The tensors to walk into from ``node``, or where the path stops and why."""
    op = node.op_type
    if is_spatial_pool(node, graph, ranks):
        return Stop(node, node.output[0], "pool")
    if op == "Conv":
        kernel = conv_kernel(node, graph)
        if kernel is None or any(k != 1 for k in kernel):
            shown = "unknown" if kernel is None else "x".join(map(str, kernel))
            return Stop(node, node.output[0], f"a Conv with a {shown} kernel")
        positions: tuple[int, ...] | None = (0,)
    elif op in ("Gemm", "MatMul"):
        positions = None  # A, and B where it is not a weight
    elif op in SHAPE_OPS:
        positions = SHAPE_OPS[op]
    elif op in _ELEMENTWISE:
        positions = _ELEMENTWISE[op]
    elif op in _REDUCE or (op == "Gather" and _selects_features(node, ranks, constants)):
        positions = (0,)  # over the channels (LayerNorm written out), or a choice of them
    else:
        return Stop(node, node.output[0], f"a {op}")
    chosen = _pick(node.input, positions)
    return [i for i in chosen if i and i not in constants]


def _selects_features(node: onnx.NodeProto, ranks: dict[str, int], constants: set[str]) -> bool:
    """A Gather of constant indices along an axis other than the batch: a fixed selection of
    features or channels (CondenseNet's ``index_select`` before its classifier)."""
    if len(node.input) < 2 or node.input[1] not in constants:
        return False
    axis = int(_attr(node, "axis") or 0)
    rank = ranks.get(node.input[0])
    return axis != 0 and (axis > 0 or (rank is not None and axis + rank > 0))


def _pick(names: Iterable[str], positions: tuple[int, ...] | None) -> list[str]:
    names = list(names)
    if positions is None:
        return names
    return [names[p] for p in positions if p < len(names)]
