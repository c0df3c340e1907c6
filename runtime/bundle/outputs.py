"""What a classifier's output is, and its probabilities and logits, without torch.

A bundle's model has one output ``[batch, K]`` of one of four kinds, recorded in the manifest's
``output.kind`` (a bundle without one is the smile model's kind, ``sigmoid-probability``):

1. ``sigmoid-probability``: K = 1, the probability of the positive class (the graph ends in a
   Sigmoid); its logit is the Sigmoid's input.
2. ``logit``: K = 1, the positive class's logit; its probability is ``sigmoid(logit)``.
3. ``logits``: K >= 2 class scores; the probabilities are their softmax. A LogSoftmax output is
   of this kind too: its softmax is the class probabilities.
4. ``probabilities``: K >= 2 softmax probabilities (the graph ends in a Softmax); the logits are
   the Softmax's input, defined up to a constant per row, so they are compared centred
   (`centred_logits`).

K sigmoid outputs (multi-label) are refused: a top label would not mean what it says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxedge.runtime.errors import OnnxEdgeError

if TYPE_CHECKING:  # the graph functions take a model; predict's path, which reads none, never
    import onnx  # imports onnx (0.1-0.6 s, most of a command's start)

SIGMOID_PROBABILITY = "sigmoid-probability"
LOGIT = "logit"
LOGITS = "logits"
PROBABILITIES = "probabilities"
OUTPUT_KINDS = (SIGMOID_PROBABILITY, LOGIT, LOGITS, PROBABILITIES)
BINARY_KINDS = (SIGMOID_PROBABILITY, LOGIT)
# The graph output's name in a bundle, by kind (the smile model's is "prob").
OUTPUT_NAMES = {
    SIGMOID_PROBABILITY: "prob",
    LOGIT: "logit",
    LOGITS: "logits",
    PROBABILITIES: "probabilities",
}

# Ops that may sit between the final activation and the graph output without changing what the
# values are. Cast: an fp16 variant keeps float32 outputs by a Cast after its final activation.
# QuantizeLinear/DequantizeLinear: a quantized graph rounds its probabilities to int8 and back
# (an int8 TFLite model through tf2onnx: Softmax, then a QDQ pair, then the output).
_PASS_THROUGH = {
    *("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"),
    *("QuantizeLinear", "DequantizeLinear"),
}
_FINAL = {"Sigmoid", "Softmax", "LogSoftmax"}


def output_kind_of(model: onnx.ModelProto, classes: int) -> str:
    """The kind of ``model``'s first output, which holds ``classes`` values a row."""
    if classes < 1:
        raise OnnxEdgeError(f"expected an output [batch, K] with K >= 1, found K = {classes}")
    final = final_activation(model)
    op = final.op_type if final is not None else None
    if op == "Sigmoid":
        if classes == 1:
            return SIGMOID_PROBABILITY
        raise OnnxEdgeError(
            f"the model ends in a Sigmoid over {classes} outputs (multi-label); expected one "
            "sigmoid probability, K logits or K softmax probabilities"
        )
    if op == "Softmax":
        if classes == 1:
            raise OnnxEdgeError(
                "the model ends in a Softmax over 1 output, which is always 1; expected K >= 2 "
                "classes, or one logit or sigmoid probability"
            )
        return PROBABILITIES
    return LOGIT if classes == 1 else LOGITS


def final_activation(model: onnx.ModelProto, output: str | None = None) -> onnx.NodeProto | None:
    """The Sigmoid, Softmax or LogSoftmax that produces the output (through reshapes), if any."""
    node = _last_op(model, output)
    return node if node is not None and node.op_type in _FINAL else None


def _last_op(model: onnx.ModelProto, output: str | None = None) -> onnx.NodeProto | None:
    """The first op upstream of the output that is not a reshape (None: a graph input)."""
    from onnxedge.runtime.check.head import producers_of, walk_back

    name = output or model.graph.output[0].name
    return walk_back(name, producers_of(model.graph), set(), _PASS_THROUGH, stop=_FINAL)


def logits_tensor(model: onnx.ModelProto, kind: str, output: str | None = None) -> str:
    """The tensor of ``model`` that holds the logits: the final Sigmoid's or Softmax's input, or
    the output itself for the logit kinds."""
    output = output or model.graph.output[0].name
    if kind in (LOGIT, LOGITS):
        return output
    node = _last_op(model, output)
    wanted = "Sigmoid" if kind == SIGMOID_PROBABILITY else "Softmax"
    if node is None or node.op_type != wanted:
        found = f"{node.op_type} node {node.name!r}" if node is not None else "a graph input"
        raise OnnxEdgeError(
            f"expected the output {output!r} of a {kind} model to come from a {wanted}, found "
            f"{found}"
        )
    return node.input[0]


def manifest_kind(output: Mapping[str, Any] | None) -> str:
    """The output kind a manifest's ``output`` block records (older bundles: the smile model's)."""
    kind = (output or {}).get("kind", SIGMOID_PROBABILITY)
    if kind not in OUTPUT_KINDS:
        raise OnnxEdgeError(
            f"unknown output kind {kind!r} in the manifest; expected one of: "
            + ", ".join(OUTPUT_KINDS)
        )
    return str(kind)


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + e^-x) without overflow


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(output: np.ndarray, kind: str) -> np.ndarray:
    """Per-class probabilities, float64 [N, K], of a model output [N, K] of ``kind``: the output
    for the probability kinds, its sigmoid (K = 1) or softmax otherwise."""
    out = np.asarray(output, dtype=np.float64)
    if kind in (SIGMOID_PROBABILITY, PROBABILITIES):
        return out
    return sigmoid(out) if kind == LOGIT else softmax(out)


def centred_logits(logits: np.ndarray, kind: str) -> np.ndarray:
    """Logits as parity compares them: as they are, except softmax inputs, which are only defined
    up to a constant per row, minus their row mean."""
    x = np.asarray(logits, dtype=np.float64)
    if kind == PROBABILITIES:
        return x - x.mean(axis=-1, keepdims=True)
    return x
