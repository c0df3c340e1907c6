"""Output kinds: told apart from the graph's last op and K; probabilities and logits from them."""

from __future__ import annotations

import numpy as np
import onnx.parser
import pytest

from onnxedge.runtime.bundle.outputs import (
    centred_logits,
    logits_tensor,
    manifest_kind,
    output_kind_of,
    probabilities,
)
from onnxedge.runtime.errors import OnnxEdgeError


@pytest.mark.parametrize(
    "op,k,kind",
    [
        ("Sigmoid", 1, "sigmoid-probability"),
        ("", 1, "logit"),
        ("", 4, "logits"),
        ("Softmax", 4, "probabilities"),
        ("LogSoftmax", 4, "logits"),
    ],
)
def test_kind_from_the_last_op(op, k, kind):
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[N, {k}] x) => (float[N, {k}] out) {{
            y = {op or "Relu"} (x)
            out = Flatten (y)
        }}
        """
    )
    assert output_kind_of(model, k) == kind
    # the final activation's input, or the output itself for the logit kinds
    assert logits_tensor(model, kind) == ("x" if op in ("Sigmoid", "Softmax") else "out")


@pytest.mark.parametrize("op,kind", [("Softmax", "probabilities"), ("Relu", "logits")])
def test_a_quantized_output_is_told_apart_through_its_qdq_pair(op, kind):
    """An int8 TFLite model through tf2onnx rounds its Softmax's probabilities to uint8 and back
    before the output: they were taken for logits, and predict took their softmax again."""
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] out) <float s = {{0.00390625}}, uint8 z = {{0}}> {{
            y = {op} (x)
            q = QuantizeLinear (y, s, z)
            out = DequantizeLinear (q, s, z)
        }}
        """
    )
    assert output_kind_of(model, 4) == kind
    assert logits_tensor(model, kind) == ("x" if op == "Softmax" else "out")


@pytest.mark.parametrize(
    "op,k,message", [("Sigmoid", 3, "multi-label"), ("Softmax", 1, "always 1")]
)
def test_kinds_that_are_refused(op, k, message):
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[N, {k}] x) => (float[N, {k}] out) {{
            out = {op} (x)
        }}
        """
    )
    with pytest.raises(OnnxEdgeError, match=message):
        output_kind_of(model, k)


def test_probabilities_and_centred_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.1, 0.2, 0.3]])
    p = probabilities(logits, "logits")
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] == 1.0 and np.isfinite(p).all()
    np.testing.assert_allclose(probabilities(np.array([[0.0], [-800.0]]), "logit"), [[0.5], [0.0]])
    shifted = centred_logits(np.array([[1.0, 2.0, 3.0]]) + 7, "probabilities")
    np.testing.assert_allclose(shifted, [[-1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(centred_logits(np.array([[5.0]]), "logit"), [[5.0]])
    assert manifest_kind({"name": "prob"}) == "sigmoid-probability"  # bundles before kinds
    with pytest.raises(OnnxEdgeError, match="unknown output kind 'scores'"):
        manifest_kind({"kind": "scores"})
