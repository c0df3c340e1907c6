"""Canonicalise every global spatial average of a CNN head into ONNX ``GlobalAveragePool``.

Exporters spell "average over H and W" in several ways (``ReduceMean`` with attribute or input
axes, ``AveragePool`` with a kernel as large as the feature map, ``GlobalAveragePool``). Edge
runtimes and later passes handle ``GlobalAveragePool`` best, so this pass rewrites the others into
it, with onnxscript rewrite rules applied by an ``onnx_ir`` pass.
"""

from __future__ import annotations

import dataclasses
import logging

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as ir_common_passes

from onnxedge.export.gap_rules import (
    AveragePoolToGlobalAveragePool,
    ChannelsLastReduceMeanToGlobalAveragePool,
    ReduceMeanToGlobalAveragePool,
    gap_rules,
)
from onnxedge.runtime.errors import OnnxEdgeError

__all__ = [
    "GAP_SCOPES",
    "AveragePoolToGlobalAveragePool",
    "CanonicalizeGapHeadPass",
    "ChannelsLastReduceMeanToGlobalAveragePool",
    "GapResult",
    "GapRewrite",
    "ReduceMeanToGlobalAveragePool",
    "canonicalize_gap_head",
    "gap_rules",
]

logger = logging.getLogger(__name__)

# Which global means become GlobalAveragePool: only the classifier head's (the one `onnxedge
# check` names), or every one (squeeze-excitation blocks too). ONNX Runtime's CPU
# GlobalAveragePool sums a large map less accurately than its ReduceMean (docs/EXPORT.md).
GAP_HEAD, GAP_ALL = "head", "all"
GAP_SCOPES = (GAP_HEAD, GAP_ALL)
DEFAULT_GAP_SCOPE = GAP_HEAD


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


class CanonicalizeGapHeadPass(ir.passes.InPlacePass):
    """Rewrite every global spatial average into ``GlobalAveragePool``.

    1. ``ReduceMean`` over exactly the two spatial axes of a rank-4 NCHW tensor, with constant
       axes given as an attribute (opset < 18) or an input (opset >= 18), negative or positive, in
       any order. ``keepdims`` 1 or absent → ``GlobalAveragePool(x)``; ``keepdims=0`` →
       ``Flatten(GlobalAveragePool(x), axis=1)``. A following Flatten/Reshape stays as it is.
       The same over axes 1 and 2 of ``Transpose(x, perm=[0, 2, 3, 1])`` (an NHWC mean, as
       tf2onnx writes Keras's GlobalAveragePooling2D) → ``GlobalAveragePool(x)``, flattened
       (``keepdims=0``) or transposed back to NHWC; and of a tensor computed from such
       Transposes by elementwise ops alone (jax2onnx's residual blocks) →
       ``GlobalAveragePool`` of it transposed back to NCHW. ``ReduceSum`` over the same axes
       divided by the map's static H x W (``Div`` by it, ``Mul`` by its reciprocal: Flax
       Linen's mean as jax2onnx writes it) → the same.
    2. ``AveragePool`` whose ``kernel_shape`` equals the static spatial dims of its input, with no
       padding (pads zero; auto_pad NOTSET, VALID, or SAME_* with strides >= the dims, which pads
       nothing) and no dilation → ``GlobalAveragePool(x)``, whatever the strides and ceil_mode;
       and a padded one whose only window covers the whole map with the padding left out of the
       mean (count_include_pad 0), as Caffe's GoogLeNet writes its head.
    3. Everything else is left alone: partial ``AveragePool``, a padded one with more than one
       window or the padding counted, ``AveragePool`` on a dynamic H or W, ``ReduceMax``,
       ``ReduceMean`` over channels, over one spatial axis, over non-constant axes, with empty
       axes, or on a tensor of unknown rank; a mean over axes 1 and 2 of a tensor not known to
       be channels-last; a ``ReduceSum`` divided by anything but the map's cells.

    The rules read shapes from the IR: run shape inference first (as
    :func:`canonicalize_gap_head` does), or nothing of unknown rank is rewritten. Nodes and
    initializers left without users (the axes, a sum's divisor, a Transpose to NHWC) are
    removed. ``rewrites`` holds what the latest call did. ``only``: the output tensors of the
    means that may be rewritten (None: every one).
    """

    def __init__(self, only: frozenset[str] | None = None) -> None:
        super().__init__()
        self.rewrites: tuple[GapRewrite, ...] = ()
        self._only = only

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        labels = _node_labels(model)
        rewrites: list[GapRewrite] = []

        def record(node: ir.Node, rule: str, detail: str) -> None:
            label = labels.get(node) or f"{node.op_type}#?"
            rewrites.append(GapRewrite(label, node.op_type, rule, detail))

        gap_rules(on_rewrite=record, only=self._only).apply_to_model(model)
        if rewrites:  # the axes, a sum's divisor, a Transpose to NHWC: dropped once unread
            ir_common_passes.RemoveUnusedNodesPass()(model)
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
