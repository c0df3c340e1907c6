"""`find_head` and check's gap_head line on tiny ONNX-text heads: pre-logits layers (1x1 conv,
hard-swish written out, LayerNorm written out, dropout) are walked through, squeeze-excitation
means are named, and each way a head can be wrong fails naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest

from onnxedge.runtime.check.check import check_model
from onnxedge.runtime.check.head import find_head, tensor_ranks

# A 1-channel-in feature extractor, an SE block that pools inside the network, then HEAD.
TEMPLATE = """
<ir_version: 8, opset_import: ["" : 18]>
net (float[N, 3, 16, 12] x) => (float[N, 5] y) {
    conv = Conv <pads = [1, 1, 1, 1]> (x, w)
    feat0 = Relu (conv)
    se_pool = GlobalAveragePool (feat0)
    se_fc = Conv (se_pool, se_w)
    se_gate = Sigmoid (se_fc)
    feat = Mul (feat0, se_gate)
    %HEAD%
}
"""

MOBILENETV3_HEAD = """
    pooled = GlobalAveragePool (feat)
    pre = Conv (pooled, pre_w, pre_b)
    plus3 = Add (pre, three)
    relu6 = Clip (plus3, zero, six)
    times = Mul (pre, relu6)
    hswish = Div (times, six)
    drop = Dropout (hswish)
    logits4 = Conv (drop, cls_w)
    y = Flatten (logits4)
"""


WEIGHTS = {
    "w": (8, 3, 3, 3),
    "se_w": (8, 8, 1, 1),
    "pre_w": (16, 8, 1, 1),
    "pre_b": (16,),
    "fc_w": (5, 16),
    "fc_b": (5,),
    "cls_w": (5, 16, 1, 1),
    "w3": (8, 8, 3, 3),
    "fc_w8": (5, 8),
    "cls_w8": (5, 8, 1, 1),
    "fc_x": (5, 576),
    "fc_c": (5, 192),
    "fc_g": (5, 6),
}


def model_with(head: str) -> onnx.ModelProto:
    model = onnx.parser.parse_model(TEMPLATE.replace("%HEAD%", head))
    rng = np.random.default_rng(0)
    arrays = {
        name: rng.standard_normal(shape).astype(np.float32) for name, shape in WEIGHTS.items()
    }
    arrays |= {n: np.array(v, dtype=np.float32) for n, v in (("three", 3), ("zero", 0), ("six", 6))}
    arrays |= {"shape2": np.array([0, -1], np.int64), "last": np.array([-1], np.int64)}
    model.graph.initializer.extend(onnx.numpy_helper.from_array(a, n) for n, a in arrays.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def gap_line(model: onnx.ModelProto):
    return next(i for i in check_model(model).items if i.name == "gap_head")


def test_mobilenetv3_head_with_written_hard_swish_passes():
    model = model_with(MOBILENETV3_HEAD)
    line = gap_line(model)
    assert line, line
    assert "into the classifier (Conv #" in line.detail
    assert "through pre-logits layers (Conv, Add, Clip, Mul, Div);" in line.detail
    assert "1 other GlobalAveragePool(s) inside the network (not the head): #2" in line.detail
    head = find_head(model.graph, tensor_ranks(model))
    assert [p.output[0] for p in head.pools] == ["pooled"]
    assert head.classifier is not None and head.classifier.output[0] == "logits4"
    assert not head.stops


def test_a_qoperator_quantized_head_is_named_with_what_to_do_instead():
    """ONNX Runtime's QOperator format ends in com.microsoft's QGemm; the line said only that no
    classifier was found."""
    helper = onnx.helper
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node(
                "QGemm", ["q", "s", "z", "w", "s", "z"], ["y"], domain="com.microsoft"
            ),
        ],
        "qoperator",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 2])],
        [
            helper.make_tensor("s", onnx.TensorProto.FLOAT, [], [0.1]),
            helper.make_tensor("z", onnx.TensorProto.UINT8, [], [128]),
            helper.make_tensor("w", onnx.TensorProto.UINT8, [2, 4], [128] * 8),
        ],
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    line = gap_line(helper.make_model(graph, opset_imports=opsets))
    assert not line
    assert "it reached QGemm node" in line.detail
    assert line.detail.endswith(
        "(a graph quantized in ONNX Runtime's QOperator format: import the float model and make "
        "its int8 variant with onnxedge optimize, or quantize with quant_format=QuantFormat.QDQ)"
    )


def test_a_pooling_head_names_a_string_attribute_as_written():
    """jax2onnx writes ``auto_pad`` on its pools; the line showed it as ``b'VALID'``."""
    head = MOBILENETV3_HEAD.replace(
        "pooled = GlobalAveragePool (feat)",
        'pooled = AveragePool <kernel_shape = [16, 12], auto_pad = "VALID"> (feat)',
    )
    line = gap_line(model_with(head))
    assert not line
    assert "with AveragePool (kernel_shape=[16, 12], auto_pad=VALID);" in line.detail, line.detail


def test_the_head_pool_still_spelled_reducemean_fails_and_the_se_pool_is_not_blamed():
    head = MOBILENETV3_HEAD.replace(
        "pooled = GlobalAveragePool (feat)",
        "axes = Constant <value = int64[2] {2, 3}> ()\n    "
        "pooled = ReduceMean <keepdims = 1> (feat, axes)",
    )
    line = gap_line(model_with(head))
    assert not line
    assert "with ReduceMean (keepdims=1); expected a single GlobalAveragePool" in line.detail
    assert "into the classifier (Conv #" in line.detail


def test_layernorm_written_out_after_the_pool_is_walked_through():
    line = gap_line(
        model_with(
            """
    pooled = GlobalAveragePool (feat)
    flat = Reshape (pooled, shape2)
    mu = ReduceMean <keepdims = 1> (flat, last)
    centred = Sub (flat, mu)
    sq = Mul (centred, centred)
    var = ReduceMean <keepdims = 1> (sq, last)
    std = Sqrt (var)
    normed = Div (centred, std)
    y = Gemm <transB = 1> (normed, fc_w8, fc_b)
    """
        )
    )
    assert line, line
    assert "into the classifier (Gemm #" in line.detail
    assert "(ReduceMean, Sub, Mul, Sqrt, Div)" in line.detail  # the channel means, walked


@pytest.mark.parametrize("axis", [1, -1, 0])
def test_a_constant_selection_of_features_is_walked_through_along_them_only(axis):
    """CondenseNet's ``index_select`` of the pooled features before its classifier, a Gather of
    constant indices: walked through like a reshape (it stopped the walk, and import refused
    the model). Along axis 0 it would pick images of the batch: that stops the walk."""
    head = f"""
    pooled = GlobalAveragePool (feat)
    flat = Flatten (pooled)
    idx = Constant <value = int64[6] {{0, 2, 3, 5, 6, 7}}> ()
    picked = Gather <axis = {axis}> (flat, idx)
    y = Gemm <transB = 1> (picked, {"fc_w8" if axis == 0 else "fc_g"}, fc_b)
    """
    line = gap_line(model_with(head))
    if axis == 0:
        assert not line and "reached Gather node #" in line.detail and "a Gather" in line.detail
    else:
        assert line, line
        assert "into the classifier (Gemm #" in line.detail


def test_a_3x3_conv_after_the_pool_is_not_a_pre_logits_layer():
    line = gap_line(
        model_with(
            """
    pooled = GlobalAveragePool (feat)
    wide = Conv <pads = [1, 1, 1, 1]> (pooled, w3)
    logits4 = Conv (wide, cls_w8)
    y = Flatten (logits4)
    """
        )
    )
    assert not line
    assert "walking back from the classifier (Conv #" in line.detail
    assert "reached Conv node #" in line.detail and "a Conv with a 3x3 kernel" in line.detail


def test_average_and_max_pool_concatenated_fail_naming_both():
    line = gap_line(
        model_with(
            """
    avg = GlobalAveragePool (feat)
    mx = GlobalMaxPool (feat)
    both = Concat <axis = 1> (avg, mx)
    flat = Flatten (both)
    y = Gemm <transB = 1> (flat, fc_w, fc_b)
    """
        )
    )
    assert not line
    assert "2 pools feed the classifier (Gemm #" in line.detail
    assert "GlobalAveragePool #" in line.detail and "GlobalMaxPool #" in line.detail


def test_a_graph_input_reached_without_a_pool_fails():
    line = gap_line(
        model_with(
            """
    pooled = GlobalAveragePool (feat)
    flat = Flatten (pooled)
    pre = Gemm <transB = 1> (flat, fc_w8, fc_b)
    raw = Flatten (x)
    skip = Gemm <transB = 1> (raw, fc_x, fc_b)
    y = Add (pre, skip)
    """
        )
    )
    assert not line
    assert "reads the graph input 'x' without a pool in between" in line.detail


@pytest.mark.parametrize(
    "head,found",
    [
        (
            """
    axes = Constant <value = int64[2] {2, 3}> ()
    pooled = ReduceMax <keepdims = 0> (feat, axes)
    y = Gemm <transB = 1> (pooled, fc_w8, fc_b)
    """,
            "with ReduceMax (keepdims=0); expected a single GlobalAveragePool",
        ),
        (
            """
    axes = Constant <value = int64[1] {1}> ()
    channel_max = ReduceMax <keepdims = 1> (feat, axes)
    flat = Flatten (channel_max)
    y = Gemm <transB = 1> (flat, fc_c, fc_b)
    """,
            "a Conv with a 3x3 kernel",  # a channel max is no pool: the walk goes on to the conv
        ),
    ],
)
def test_reducemax_over_space_is_a_pool_over_channels_is_not(head, found):
    line = gap_line(model_with(head))
    assert not line
    assert found in line.detail


@pytest.mark.parametrize("op", ["GlobalAveragePool", "ReduceMean"])
def test_the_other_global_means_are_counted_and_the_list_says_how_many_it_leaves_out(op):
    """Eight squeeze-excitation pools: the line names six, and says there are two more."""
    pool = (
        "se{i} = GlobalAveragePool (feat{p})"
        if op == "GlobalAveragePool"
        else "se{i} = ReduceMean <keepdims = 1> (feat{p}, axes)"
    )
    blocks = "\n    ".join(
        f"{pool.format(i=i, p=i - 1)}\n    feat{i} = Mul (feat{i - 1}, se{i})" for i in range(1, 9)
    )
    head = (
        "axes = Constant <value = int64[2] {2, 3}> ()\n    feat0_ = Identity (feat)\n    "
        + blocks.replace("feat0,", "feat0_,").replace("(feat0)", "(feat0_)")
        + "\n    pooled = GlobalAveragePool (feat8)\n    logits4 = Conv (pooled, cls_w8)\n"
        "    y = Flatten (logits4)"
    )
    line = gap_line(model_with(head))
    assert line, line
    if op == "GlobalAveragePool":  # and the template's own SE pool
        assert "9 other GlobalAveragePool(s) inside the network (not the head): " in line.detail
        assert " and 3 more" in line.detail
    else:
        assert "8 spatial ReduceMean(s) not lowered to GlobalAveragePool: #8, #10, " in line.detail
        assert line.detail.endswith(" and 2 more")
