"""What the variant makers need to know about a graph: the head to keep in float, the
convolutions that read the image, node names for the tools that select nodes by name, the
operators a model uses, and the package versions a variant records."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence

import onnx

from onnxedge.runtime.check.head import (
    ACTIVATIONS,
    constant_tensors,
    find_head,
    producers_of,
    tensor_ranks,
    walk_back,
)
from onnxedge.runtime.errors import OnnxEdgeError

# Ops whose inputs from this index on are shapes, axes or indices, not the data the head computes:
# a Reshape's target shape is made of Shape, Gather, Unsqueeze and Concat nodes where a model
# flattens with ``x.view(x.size(0), -1)`` (every pytorchcv model exported by torchscript), and
# keeping those int64 nodes "in float32" broke the fp16 conversion's graph. The reductions take
# their axes as an input (ReduceSum from opset 13, the others from 18). Beyond these, the walk
# stops at every tensor shape inference types as other than floating point (`_not_float`): a
# shape, an index, an axis computed from the image's shape (Shape, then the backbone, was taken).
_DATA_INPUTS = {"Reshape": 1, "Expand": 1, "Unsqueeze": 1, "Squeeze": 1, "Tile": 1, "Slice": 1}
_DATA_INPUTS |= {"Resize": 1, "Pad": 1, "Split": 1, "Gather": 1, "ConstantOfShape": 0, "Shape": 0}
_REDUCTIONS = ("Mean", "Sum", "Max", "Min", "Prod", "L1", "L2", "LogSum", "LogSumExp", "SumSquare")
_DATA_INPUTS |= {f"Reduce{r}": 1 for r in _REDUCTIONS}
_FLOATS = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}


def _inferred(model: onnx.ModelProto) -> onnx.GraphProto:
    """The graph with what shape inference tells of its tensors (the graph as it is where
    inference fails: it only helps here, the walk has `_DATA_INPUTS`)."""
    with contextlib.suppress(Exception):
        return onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    return model.graph


def _not_float(graph: onnx.GraphProto) -> set[str]:
    """The tensors of an `_inferred` graph typed as other than floating point (an unknown type
    is taken for data)."""
    typed = (*graph.input, *graph.value_info, *graph.output)
    found = {v.name for v in typed if v.type.tensor_type.elem_type not in (0, *_FLOATS)}
    return found | {i.name for i in graph.initializer if i.data_type not in _FLOATS}


def head_node_names(model: onnx.ModelProto) -> list[str]:
    """The classifier (the linear layer nearest the first output, as `onnxedge check` finds it)
    and every node between it and that output (the Sigmoid, a Reshape), by name. Where the pool
    feeds the output with no linear layer after it (SqueezeNet: a 1x1 Conv to the classes, a
    ReLU, the pool, a Flatten), the classifier is the Conv, Gemm or MatMul before the pool
    (`_classifier_before_pool`), and the head runs from it through the pool to the output."""
    graph = model.graph
    inferred = _inferred(model)  # once, for the ranks and the types
    head = find_head(graph, tensor_ranks(inferred))
    producers = producers_of(graph)
    classifier = head.classifier or _classifier_before_pool(graph, head.pools, producers)
    if classifier is None:
        raise OnnxEdgeError(
            "expected a classifier (Gemm, MatMul or 1x1 Conv) after the pool, or a Conv, Gemm "
            "or MatMul before its only pool; found none, so there is no head to keep in float"
        )
    names: list[str] = []
    stack, seen = [head.output], set()
    not_float = _not_float(inferred)
    while stack:
        tensor = stack.pop()
        node = None if tensor in not_float else producers.get(tensor)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.append(node.name)
        if node is not classifier:
            data = node.input[: _DATA_INPUTS.get(node.op_type, len(node.input))]
            stack.extend(i for i in data if i)
    if not all(names):
        raise OnnxEdgeError("expected named nodes in the head (name_unnamed_nodes first)")
    return names


def _classifier_before_pool(
    graph: onnx.GraphProto,
    pools: Sequence[onnx.NodeProto],
    producers: dict[str, onnx.NodeProto],
) -> onnx.NodeProto | None:
    """The nearest of `_PRODUCT_OPS` upstream of the head's only pool, through the classifier's
    own activation, normalization and a bias or scale (`walk_back`: never across an op that joins
    two branches, a residual Add or a Concat); None where there are several pools or the walk
    ends at anything else."""
    if len(pools) != 1 or not pools[0].input:
        return None
    node = walk_back(
        pools[0].input[0], producers, constant_tensors(graph), _BEFORE_POOL, stop=_PRODUCT_OPS
    )
    return node if node is not None and node.op_type in _PRODUCT_OPS else None


# What `_classifier_before_pool` walks through: a classifier's activation and normalization, a
# cast, Q/DQ pairs, and an Add or Mul of one data input (a bias, a scale; `walk_back` stops at one
# that joins two branches).
_BEFORE_POOL = ACTIVATIONS | {"Identity", "Cast", "Dropout", "QuantizeLinear", "DequantizeLinear"}
_BEFORE_POOL |= {"Add", "Mul"}


# Ops whose int8 form multiplies activations by weights (onnxruntime's u8 x s8 kernels): where the
# image's activations stop flowing unchanged in kind.
_PRODUCT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def image_conv_weights(model: onnx.ModelProto, skip: Sequence[str] = ()) -> list[str]:
    """The weight initializers of the convolutions that read the image: each Conv reached from
    the model's (ONNX proto's) first input through ops other than `_PRODUCT_OPS` (a Pad of
    ``int8-pad4``, in-graph scaling), in graph order, but those of the nodes named in ``skip``
    (left in float) and convolutions whose weight is not an initializer.

    Their activations are dense and span the whole uint8 range (pixels, not ReLU outputs), so
    where onnxruntime's int8 kernels add u8 x s8 products in pairs into 16 bits (x86 without
    VNNI: AVX2's VPMADDUBSW), two large pixels times two large weights of one sign saturate;
    `quantize_int8` gives these weights 7 bits (`Int8Config.weights_7_bit`).
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    reached = {graph.input[0].name}
    weights = []
    for node in graph.node:  # a valid ONNX graph lists its nodes in topological order
        if not any(name in reached for name in node.input):
            continue
        if node.op_type not in _PRODUCT_OPS:
            reached.update(node.output)
        elif (
            node.op_type == "Conv"
            and node.name not in skip
            and len(node.input) > 1
            and node.input[1] in initializers
        ):
            weights.append(node.input[1])
    return weights


def name_unnamed_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed node a unique name (``OpType_index``), so tools that select nodes by
    name can select it; returns how many were named. Nothing else changes."""
    taken = {n.name for n in model.graph.node if n.name}
    named = 0
    for index, node in enumerate(model.graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
        named += 1
    return named


def operators(model: onnx.ModelProto) -> dict[str, list[str]]:
    """The operators the graph's nodes use, as a reduced onnxruntime build's configuration lists
    them: ``{"domain;since_version": [op, ...]}``, where ``since_version`` is the version of the
    operator's schema that the model's opset resolves to (``ai.onnx;13`` for a DequantizeLinear
    of an opset-18 model) and ``ai.onnx`` is the default domain. Operators onnx has no schema for
    (onnxruntime's ``com.microsoft`` ones) take their domain's opset. Subgraphs are not walked
    (the models onnxedge makes have none)."""
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    found: dict[str, set[str]] = {}
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        opset = opsets.get(domain, 1)
        try:
            schema = onnx.defs.get_schema(
                node.op_type, max_inclusive_version=opset, domain=node.domain or ""
            )
            version = schema.since_version
        except onnx.defs.SchemaError:
            version = opset
        found.setdefault(f"{domain};{version}", set()).add(node.op_type)
    return {key: sorted(ops) for key, ops in found.items()}


def operators_config(per_model: Iterable[Mapping[str, Iterable[str]]]) -> str:
    """The required-operators configuration of several models (the union of `operators`), in the
    format of onnxruntime's ``create_config_from_models``: ``domain;since_version;Op1,Op2``
    lines, by domain, then version."""
    merged: dict[tuple[str, int], set[str]] = {}
    for block in per_model:
        for key, ops in block.items():
            domain, _, version = key.partition(";")
            merged.setdefault((domain, int(version)), set()).update(ops)
    lines = ["# Generated by onnxedge optimize: the operators of the bundle's .ort variants"]
    for (domain, version), ops in sorted(merged.items()):
        lines.append(f"{domain};{version};{','.join(sorted(ops))}")
    return "\n".join(lines) + "\n"


def package_versions() -> dict[str, str | None]:
    """The versions a variant records: what made it (onnxruntime's tools, onnx, numpy) and this
    onnxedge, from package metadata (nothing is imported)."""
    import platform

    from onnxedge.runtime.deps import onnxruntime_version, package_version

    return {
        "onnxedge": package_version("onnxedge"),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime_version(),
        "onnx": package_version("onnx"),
        "numpy": package_version("numpy"),
    }


__all__ = [
    "head_node_names",
    "image_conv_weights",
    "name_unnamed_nodes",
    "operators",
    "operators_config",
    "package_versions",
]
