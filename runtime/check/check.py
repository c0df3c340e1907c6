"""`onnxedge check`: is this ONNX image classifier fit to ship?

Three checks, each a `CheckItem` that names the node and what it found when it fails:

1. ``onnx``: `onnx.checker.check_model(full_check=True)` (structure and strict shape inference).
2. ``batch``: dim 0 of every graph input and output is one shared symbolic dim.
3. ``gap_head``: the op that pools the last feature map into the classifier is one
   ``GlobalAveragePool``, found by `onnxedge.runtime.check.head.find_head`: walking back from the
   first
   output through the classifier (Gemm, MatMul or a 1x1 Conv) and any pre-logits layers (1x1
   convs, linear layers, activations such as hard-swish written out, dropout, flatten/reshape,
   normalisations) on every path to the op that reduces H and W. It passes when every path ends at
   the same ``GlobalAveragePool``; the other global means of the graph (squeeze-excitation blocks
   pool inside the network) are named in its line. Works on any image classifier, not only ours.

The checks only read the model; none modifies it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import onnx

from onnxedge.runtime.check.head import (
    SHAPE_OPS,
    GraphCycleError,
    Head,
    find_head,
    is_spatial_pool,
    tensor_ranks,
    walk_back,
)
from onnxedge.runtime.errors import OnnxEdgeError, first_line, found_at, not_onnx
from onnxedge.runtime.lines import fit

__all__ = ["CheckItem", "CheckReport", "GraphCycleError", "check_model", "check_path", "walk_back"]

_GLOBAL_MEAN_LISTED = 6  # how many of the other global means the gap_head line names


@dataclasses.dataclass(frozen=True)
class CheckItem:
    name: str
    passed: bool
    detail: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'PASSED' if self.passed else 'FAILED'} | {self.name} | {self.detail}"

    def line(self, *, verbose: bool = False) -> str:
        """As printed: one line with ``verbose``, else wrapped to `LINE_WIDTH` columns."""
        return str(self) if verbose else fit(str(self))


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
        raise OnnxEdgeError(f"expected an ONNX file, found {found_at(path)}")
    if path.stat().st_size == 0:
        raise OnnxEdgeError(f"expected an ONNX file, found an empty file at {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError, OSError
        raise OnnxEdgeError(not_onnx(path, e)) from None
    refuse_graphless(model, path)
    try:  # an ONNX file whose weights are elsewhere is one; missing weights are another error
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as e:
        raise OnnxEdgeError(f"{path}: cannot read its external data: {first_line(e)}") from None
    return model


def refuse_graphless(model: onnx.ModelProto, path: str | Path) -> None:
    """Bytes that happen to parse as a ModelProto (protobuf reads many) but hold no graph: no
    node and no output, whether the graph field is absent or empty, are not a model."""
    if not model.graph.node and not model.graph.output:
        raise OnnxEdgeError(f"{path} is not an ONNX model: it parses, but holds no graph")


def check_model(model: onnx.ModelProto, *, source: str = "<model>") -> CheckReport:
    return CheckReport(
        source=source,
        items=(_check_onnx(model), _check_batch(model), _check_gap_head(model)),
    )


def check_path(path: str | Path) -> CheckReport:
    """Check a ``.onnx`` file, or the ``model.onnx`` of a bundle directory (hash verified)."""
    path = Path(path)
    if path.is_dir():
        from onnxedge.runtime.bundle.reader import Bundle

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


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the default domain (``""`` or ``ai.onnx``); 0 where it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


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
    # A number is a fixed dim; -1, as PaddlePaddle's converter writes it, is not a name either.
    bad = [(k, n, d) for k, n, d in dims if d.lstrip("-").isdigit() or d.startswith("<")]
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


def _node_label(node: onnx.NodeProto, index: dict[int, int]) -> str:
    return repr(node.name) if node.name else f"#{index[id(node)]}"


def _check_gap_head(model: onnx.GraphProto | onnx.ModelProto) -> CheckItem:
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    if not graph.output:
        return CheckItem("gap_head", False, "the graph has no outputs")
    nodes = list(graph.node)  # held: protobuf wrappers keep their id() only while alive
    index = {id(n): i for i, n in enumerate(nodes)}
    try:
        ranks = tensor_ranks(model)
        head = find_head(graph, ranks)
    except GraphCycleError as e:
        return CheckItem(
            "gap_head",
            False,
            f"walking back from output {graph.output[0].name!r} went round a cycle through "
            f"{e.node.op_type} node {_node_label(e.node, index)}; expected an acyclic graph",
        )
    return _judge_head(head, graph, index, ranks)


# ONNX Runtime's QOperator format of a quantized graph (com.microsoft ops and QLinearConv): its
# head is a QLinearGlobalAveragePool and a QGemm, which no check or engine of onnxedge reads as
# one; the QDQ format, as onnxedge's own int8 variants, keeps the float ops between Q/DQ pairs.
_QOPERATOR_OPS = frozenset(
    {
        *("QGemm", "QLinearMatMul", "QLinearConv", "QLinearGlobalAveragePool"),
        *("QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearSoftmax", "QLinearConcat"),
        *("QLinearAveragePool", "QLinearLeakyRelu"),
    }
)
_QOPERATOR_HINT = (
    " (a graph quantized in ONNX Runtime's QOperator format: import the float model and make "
    "its int8 variant with onnxedge optimize, or quantize with quant_format=QuantFormat.QDQ)"
)


def _judge_head(
    head: Head, graph: onnx.GraphProto, index: dict[int, int], ranks: dict[str, int]
) -> CheckItem:
    """Check 3. of the module docstring: one GlobalAveragePool, and every path from the output
    back to the feature map goes through it."""

    def label(node: onnx.NodeProto) -> str:
        return _node_label(node, index)

    classifier = head.classifier
    target = (
        f"the classifier ({classifier.op_type} {label(classifier)})"
        if classifier is not None
        else "the output"
    )
    if head.stops:
        stop = head.stops[0]
        if stop.node is None:
            return CheckItem(
                "gap_head",
                False,
                f"{target} reads the graph input {stop.tensor!r} without a pool in between; "
                "expected a GlobalAveragePool before it",
            )
        if classifier is None and not head.pools:
            return CheckItem(
                "gap_head",
                False,
                f"walking back from output {head.output!r} found no classifier op: it reached "
                f"{stop.node.op_type} node {label(stop.node)} ({stop.why}); expected a Gemm, "
                "MatMul or 1x1 Conv classifier after a GlobalAveragePool"
                + (_QOPERATOR_HINT if stop.node.op_type in _QOPERATOR_OPS else ""),
            )
        return CheckItem(
            "gap_head",
            False,
            f"walking back from {target} reached {stop.node.op_type} node {label(stop.node)} "
            f"({stop.why}{_describe(stop.node)}) before any pool; expected only pre-logits layers "
            "(1x1 Conv, Gemm/MatMul, activations, dropout, flatten/reshape) between a "
            "GlobalAveragePool and the output",
        )
    if not head.pools:
        return CheckItem(
            "gap_head", False, f"walking back from output {head.output!r} found no pooling op"
        )
    if len(head.pools) > 1:
        listing = ", ".join(f"{p.op_type} {label(p)}" for p in head.pools)
        return CheckItem(
            "gap_head",
            False,
            f"{len(head.pools)} pools feed {target}: {listing}; expected a single "
            "GlobalAveragePool",
        )
    (pool,) = head.pools
    if pool.op_type != "GlobalAveragePool":
        return CheckItem(
            "gap_head",
            False,
            f"node {label(pool)} pools the last feature map into {target} with "
            f"{pool.op_type}{_describe(pool)}; expected a single GlobalAveragePool",
        )
    detail = f"GlobalAveragePool {label(pool)} pools the last feature map into {target}"
    ops = list(dict.fromkeys(n.op_type for n in head.pre_logits if n.op_type not in SHAPE_OPS))
    if ops:
        detail += f" through pre-logits layers ({', '.join(ops)})"
    return CheckItem("gap_head", True, detail + _other_means(graph, pool, index, ranks))


def _other_means(
    graph: onnx.GraphProto, pool: onnx.NodeProto, index: dict[int, int], ranks: dict[str, int]
) -> str:
    """The other global means of the graph (squeeze-excitation blocks pool inside the network),
    named, and spatial means still spelled as ReduceMean."""
    others = [n for n in graph.node if n.op_type == "GlobalAveragePool" and n is not pool]
    unlowered = [
        n
        for n in graph.node
        if n.op_type == "ReduceMean" and is_spatial_pool(n, graph, ranks) and n is not pool
    ]
    if not others and not unlowered:
        return ""
    text = ""
    if others:
        text += (
            f"; {len(others)} other GlobalAveragePool(s) inside the network (not the head): "
            f"{_listed(others, index)}"
        )
    if unlowered:
        text += (
            f"; {len(unlowered)} spatial ReduceMean(s) not lowered to GlobalAveragePool: "
            f"{_listed(unlowered, index)}"
        )
    return text


def _listed(nodes: list[onnx.NodeProto], index: dict[int, int]) -> str:
    """The first `_GLOBAL_MEAN_LISTED` of ``nodes`` by name, and how many more there are."""
    names = ", ".join(_node_label(n, index) for n in nodes[:_GLOBAL_MEAN_LISTED])
    more = len(nodes) - _GLOBAL_MEAN_LISTED
    return f"{names} and {more} more" if more > 0 else names


def _describe(node: onnx.NodeProto) -> str:
    """The node's attributes as a user reads them: ``auto_pad=VALID``, not ``b'VALID'``."""
    parts = []
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        parts.append(f"{attr.name}={list(value) if isinstance(value, (list, tuple)) else value}")
    return f" ({', '.join(parts)})" if parts else ""
