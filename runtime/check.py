"""`onnxedge check`: is this ONNX image classifier fit to ship?

Three checks, each a `CheckItem` that names the node and what it found when it fails:

1. ``onnx``: `onnx.checker.check_model(full_check=True)` (structure and strict shape inference).
2. ``batch``: dim 0 of every graph input and output is one shared symbolic dim.
3. ``gap_head``: the op that pools the last feature map into the classifier is one
   ``GlobalAveragePool``. Found by walking back from the first output, through activations and
   shape-only ops, to the classifier (Gemm, MatMul, or a 1x1 Conv), then from the classifier's data
   input back to the op that produced it. Works on any image classifier, not only ours.

The checks only read the model; none modifies it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import onnx

from onnxedge.runtime.errors import OnnxEdgeError, first_line

# Ops that pass a tensor on without mixing spatial positions: walked through in both searches.
_TRANSPARENT = {
    "Identity",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Cast",
    "Dropout",
}
# Ops between the classifier and the output.
_OUTPUT_SIDE = _TRANSPARENT | {"Sigmoid", "Softmax", "LogSoftmax", "Add", "Mul", "Relu", "Clip"}
_CLASSIFIERS = {"Gemm", "MatMul", "Conv"}
_POOLS = {"GlobalAveragePool", "AveragePool", "ReduceMean", "GlobalMaxPool", "MaxPool", "ReduceMax"}


@dataclasses.dataclass(frozen=True)
class CheckItem:
    name: str
    passed: bool
    detail: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'PASSED' if self.passed else 'FAILED'} | {self.name} | {self.detail}"


@dataclasses.dataclass(frozen=True)
class CheckReport:
    source: str
    items: tuple[CheckItem, ...]

    def __bool__(self) -> bool:
        return all(i.passed for i in self.items)

    @property
    def passed(self) -> bool:
        return bool(self)

    @property
    def failures(self) -> tuple[CheckItem, ...]:
        return tuple(i for i in self.items if not i.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [dataclasses.asdict(i) for i in self.items],
        }


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file, or fail with one line that says what was found instead."""
    path = Path(path)
    if not path.is_file():
        raise OnnxEdgeError(f"expected an ONNX file, found nothing at {path}")
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, OSError, external-data errors
        raise OnnxEdgeError(
            f"{path} is not an ONNX model: expected a serialized ModelProto, "
            f"protobuf says: {first_line(e)}"
        ) from None


def check_model(model: onnx.ModelProto, *, source: str = "<model>") -> CheckReport:
    return CheckReport(
        source=source,
        items=(_check_onnx(model), _check_batch(model), _check_gap_head(model)),
    )


def check_path(path: str | Path) -> CheckReport:
    """Check a ``.onnx`` file, or the ``model.onnx`` of a bundle directory (hash verified)."""
    path = Path(path)
    if path.is_dir():
        from onnxedge.runtime.bundle import Bundle

        path = Bundle.open(path).model_path
    return check_model(load_model(path), source=str(path))


def _check_onnx(model: onnx.ModelProto) -> CheckItem:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        return CheckItem("onnx", False, f"onnx.checker (full_check) failed: {first_line(e)}")
    return CheckItem("onnx", True, "onnx.checker full_check passed")


def graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs, not initializers listed as inputs (IR < 4 style)."""
    inits = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def _dim0(value: onnx.ValueInfoProto) -> str:
    shape = value.type.tensor_type.shape
    if not value.type.HasField("tensor_type") or not shape.dim:
        return "<no shape>"
    d = shape.dim[0]
    if d.HasField("dim_param") and d.dim_param:
        return d.dim_param
    if d.HasField("dim_value"):
        return str(d.dim_value)
    return "<unnamed dynamic>"


def _check_batch(model: onnx.ModelProto) -> CheckItem:
    values = [("input", v) for v in graph_inputs(model.graph)]
    values += [("output", v) for v in model.graph.output]
    if not values:
        return CheckItem("batch", False, "the graph has no inputs or outputs")
    dims = [(kind, v.name, _dim0(v)) for kind, v in values]
    bad = [(k, n, d) for k, n, d in dims if d.isdigit() or d.startswith("<")]
    if bad:
        kind, name, dim = bad[0]
        return CheckItem("batch", False, f"{kind} {name!r}: expected a symbolic dim 0, found {dim}")
    symbols = {d for _, _, d in dims}
    if len(symbols) > 1:
        listing = ", ".join(f"{k} {n!r}={d!r}" for k, n, d in dims)
        return CheckItem(
            "batch", False, f"expected one shared symbolic dim 0, found several: {listing}"
        )
    return CheckItem("batch", True, f"dim 0 of every input and output is {symbols.pop()!r}")


def producers_of(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def _node_label(node: onnx.NodeProto, index: dict[int, int]) -> str:
    return repr(node.name) if node.name else f"#{index[id(node)]}"


def _data_inputs(node: onnx.NodeProto, initializers: set[str]) -> list[str]:
    return [i for i in node.input if i and i not in initializers]


class GraphCycleError(OnnxEdgeError):
    """A walk through the graph came back to a node: the graph has a cycle."""

    def __init__(self, node: onnx.NodeProto) -> None:
        super().__init__(f"the graph has a cycle through {node.op_type} node {node.name!r}")
        self.node = node


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


def _check_gap_head(model: onnx.GraphProto | onnx.ModelProto) -> CheckItem:
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    try:
        return _find_gap_head(graph)
    except GraphCycleError as e:
        index = {id(n): i for i, n in enumerate(graph.node)}
        return CheckItem(
            "gap_head",
            False,
            f"walking back from output {graph.output[0].name!r} went round a cycle through "
            f"{e.node.op_type} node {_node_label(e.node, index)}; expected an acyclic graph",
        )


def _find_gap_head(graph: onnx.GraphProto) -> CheckItem:
    if not graph.output:
        return CheckItem("gap_head", False, "the graph has no outputs")
    producers = producers_of(graph)
    inits = {i.name for i in graph.initializer}
    inits |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    index = {id(n): i for i, n in enumerate(graph.node)}
    output = graph.output[0].name

    classifier = walk_back(output, producers, inits, _OUTPUT_SIDE, _CLASSIFIERS | _POOLS)
    if classifier is None:
        return CheckItem(
            "gap_head", False, f"walking back from output {output!r} found no classifier op"
        )
    if classifier.op_type in _POOLS:
        # Pool after the classifier (e.g. a 1x1 Conv classifier then GAP, as in SqueezeNet).
        pool = classifier
        target = "the output"
    elif classifier.op_type not in _CLASSIFIERS:
        return CheckItem(
            "gap_head",
            False,
            f"walking back from output {output!r} reached {classifier.op_type} node "
            f"{_node_label(classifier, index)}; expected a Gemm, MatMul or Conv classifier",
        )
    else:
        data = _data_inputs(classifier, inits)
        if not data:
            return CheckItem(
                "gap_head", False, f"classifier {classifier.op_type} has no data input"
            )
        pool = walk_back(data[0], producers, inits, _TRANSPARENT, _POOLS)
        target = f"the classifier ({classifier.op_type} {_node_label(classifier, index)})"
        if pool is None:
            return CheckItem(
                "gap_head",
                False,
                f"{target} reads a graph input directly; expected a GlobalAveragePool before it",
            )
    if pool.op_type != "GlobalAveragePool":
        return CheckItem(
            "gap_head",
            False,
            f"node {_node_label(pool, index)} pools the last feature map into {target} with "
            f"{pool.op_type}{_describe(pool)}; expected a single GlobalAveragePool",
        )
    return CheckItem(
        "gap_head",
        True,
        f"GlobalAveragePool {_node_label(pool, index)} pools the last feature map into {target}",
    )


def _describe(node: onnx.NodeProto) -> str:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    parts = [f"{k}={list(v) if isinstance(v, (list, tuple)) else v}" for k, v in attrs.items()]
    return f" ({', '.join(parts)})" if parts else ""
