"""The check-only copy that exposes the logits, on float32 and float16 graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest

from onnxedge.runtime.bundle.outputs import SIGMOID_PROBABILITY, logits_tensor
from onnxedge.runtime.parity.graph import with_logits_output

# What an fp16 variant looks like around its head: float32 in and out, float16 inside, a Cast
# after the Sigmoid.
_FP16_HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
head (float[N, 2] x) => (float[N, 1] prob) {
    x16 = Cast<to = 10>(x)
    w32 = Constant<value = float[2, 1] {1.5, -2.0}>()
    w = Cast<to = 10>(w32)
    logits = MatMul(x16, w)
    p16 = Sigmoid(logits)
    prob = Cast<to = 1>(p16)
}
"""
_FP32_HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
head (float[N, 2] x) => (float[N, 1] prob) {
    w = Constant<value = float[2, 1] {1.5, -2.0}>()
    logits = MatMul(x, w)
    prob = Sigmoid(logits)
}
"""


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"x": x}), strict=True))


@pytest.mark.parametrize("text", [_FP32_HEAD, _FP16_HEAD], ids=["fp32", "fp16"])
def test_the_logits_are_exposed_as_float32(text: str) -> None:
    model = onnx.parser.parse_model(text)
    name = logits_tensor(model, SIGMOID_PROBABILITY)
    assert name == "logits"
    checked = with_logits_output(model, name)
    x = np.array([[0.5, 0.25], [-1.0, 2.0]], dtype=np.float32)
    out = _run(checked, x)
    expected = x.astype(np.float64) @ np.array([[1.5], [-2.0]])
    assert out["logits"].dtype == np.float32
    np.testing.assert_allclose(out["logits"], expected, atol=1e-2)
    np.testing.assert_allclose(out["prob"], 1 / (1 + np.exp(-expected)), atol=1e-3)
    # the shipped graph keeps its one output
    assert [o.name for o in model.graph.output] == ["prob"]


def test_a_cast_that_is_not_after_the_sigmoid_is_still_refused() -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        head (float[N, 2] x) => (float[N, 1] prob) {
            w = Constant<value = float[2, 1] {1.5, -2.0}>()
            logits = MatMul(x, w)
            prob = Cast<to = 1>(logits)
        }
        """
    )
    with pytest.raises(Exception, match="to come from a Sigmoid, found MatMul"):
        logits_tensor(model, SIGMOID_PROBABILITY)
