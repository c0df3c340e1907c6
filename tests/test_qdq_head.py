"""`onnxedge check` on quantised (QDQ) graphs: the head check looks through QuantizeLinear /
DequantizeLinear pairs to the op they wrap, and still fails on a head that is not a
GlobalAveragePool however it is wrapped."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest

from onnxedge.runtime.check.check import check_model
from onnxedge.runtime.check.head import find_head, tensor_ranks

# conv -> Q/DQ -> POOL -> Q/DQ -> Flatten -> Gemm (float) -> Sigmoid, as onnxruntime's QDQ
# quantiser writes it with the classifier and the sigmoid kept float.
QDQ = """
<ir_version: 8, opset_import: ["" : 18]>
qdq (float[N, 3, 8, 8] x) => (float[N, 1] prob)
    <float[4, 3, 3, 3] w, float[1, 4] fc_w, float[1] fc_b, float s = {0.05}, uint8 z = {0}> {
    conv = Conv <pads = [1, 1, 1, 1]> (x, w)
    act = Relu (conv)
    q1 = QuantizeLinear (act, s, z)
    d1 = DequantizeLinear (q1, s, z)
    pooled = POOL (d1)
    q2 = QuantizeLinear (pooled, s, z)
    d2 = DequantizeLinear (q2, s, z)
    flat = Flatten (d2)
    logit = Gemm <transB = 1> (flat, fc_w, fc_b)
    prob = Sigmoid (logit)
}
"""


def qdq_model(pool: str) -> onnx.ModelProto:
    model = onnx.parser.parse_model(QDQ.replace("POOL", pool))
    rng = np.random.default_rng(0)
    model.graph.initializer.extend(
        onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        for name, shape in (("w", (4, 3, 3, 3)), ("fc_w", (1, 4)), ("fc_b", (1,)))
    )
    return model


def test_the_head_check_passes_through_qdq_pairs():
    report = check_model(qdq_model("GlobalAveragePool"))
    assert report, report.failures
    gap = report.items[2]
    assert "GlobalAveragePool" in gap.detail and "Gemm" in gap.detail
    assert "QuantizeLinear" not in gap.detail  # Q/DQ are not pre-logits layers


def test_the_walk_follows_data_not_scales():
    model = qdq_model("GlobalAveragePool")
    head = find_head(model.graph, tensor_ranks(model))
    assert [p.op_type for p in head.pools] == ["GlobalAveragePool"]
    assert head.classifier is not None and head.classifier.op_type == "Gemm"
    assert not head.stops  # the scale and zero point (constants) were not walked into


@pytest.mark.parametrize(
    ("pool", "found"),
    [
        ("AveragePool <kernel_shape = [8, 8]>", "AveragePool"),
        ("GlobalMaxPool", "GlobalMaxPool"),
    ],
)
def test_a_wrong_pool_is_still_found_behind_qdq_pairs(pool, found):
    report = check_model(qdq_model(pool))
    assert not report
    (failure,) = report.failures
    assert failure.name == "gap_head"
    assert (
        f"with {found}" in failure.detail
        and "expected a single GlobalAveragePool" in failure.detail
    )


def test_an_int8_model_that_fails_the_check_is_refused(tmp_path):
    """`quantize_int8` checks what it wrote: a quantised graph whose head is not a
    GlobalAveragePool is an error, never a variant."""
    from onnxedge.runtime.errors import OnnxEdgeError
    from onnxedge.runtime.variants.quantize import check_quantized

    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(qdq_model("GlobalAveragePool"), str(good))
    onnx.save(qdq_model("GlobalMaxPool"), str(bad))
    check_quantized(good)
    with pytest.raises(
        OnnxEdgeError, match=r"the int8 model fails onnxedge check: .*GlobalMaxPool"
    ):
        check_quantized(bad)
