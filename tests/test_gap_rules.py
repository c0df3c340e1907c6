"""Tests of the GAP-head canonicalisation (`onnxedge.export.gap`).

Every case is a tiny model in ONNX text. Each test checks the exact op list after the rewrite, the
number of rewrites, `onnx.checker` (full check), the graph signature (symbolic batch included) and
numerical equality with the original under ONNX Runtime at batch 1 and 3.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx.parser
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnxscript.rewriter import MatchingTracer

from onnxedge.export import gap
from onnxedge.export.gap import (
    CanonicalizeGapHeadPass,
    GapRewrite,
    canonicalize_gap_head,
    gap_rules,
)
from onnxedge.runtime.errors import OnnxEdgeError

_ATOL = 1e-6
_BATCHES = (1, 3)
# 1x1 conv, 3 -> 4 channels: the feature map [batch, 4, 8, 8] the heads below pool.
_CONV_W = "float[4,3,1,1] w = {0.5, -1.0, 0.25, 1.5, 0.75, -0.5, -0.25, 1.0, 2.0, 0.1, -0.3, 0.6}"
_FC_W = "float[4,2] wfc = {0.5, -1.0, 0.25, 1.5, 0.75, -0.5, -0.25, 1.0}"
_X = "float[batch,3,8,8] x"


def _model(
    body: str,
    *,
    opset: int,
    ir_version: int = 8,
    x: str = _X,
    y: str = "float[batch,4] y",
    extra_inputs: str = "",
    inits: tuple[str, ...] = (),
) -> onnx.ModelProto:
    """A model `y = head(Conv(x, w))`; `body` uses `f` ([batch, 4, 8, 8]) and defines `y`."""
    inputs = ", ".join(filter(None, [x, extra_inputs]))
    initializers = ", ".join([_CONV_W, *inits])
    text = f"""
        <ir_version: {ir_version}, opset_import: ["" : {opset}]>
        head ({inputs}) => ({y}) <{initializers}> {{
            f = Conv(x, w)
            {body}
        }}
    """
    return onnx.parser.parse_model(text)


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    model: onnx.ModelProto
    ops: list[str]  # exact op types after the rewrite
    rewrites: int


# Values of the int64 graph inputs, by name.
_INT64_FEEDS = {"axes": [2, 3], "shape_in": [0, 0, 8, 8]}


def _feeds(model: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    """Random float inputs at `batch` (symbolic dims of size 8 otherwise), int64 ones by name."""
    rng = np.random.default_rng(batch)
    feeds: dict[str, np.ndarray] = {}
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type == onnx.TensorProto.INT64:
            feeds[value.name] = np.array(_INT64_FEEDS[value.name], dtype=np.int64)
            continue
        shape = [
            d.dim_value if d.HasField("dim_value") else (batch if i == 0 else 8)
            for i, d in enumerate(tensor_type.shape.dim)
        ]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        feeds[value.name] = (rng.standard_normal(shape) * 3).astype(dtype)
    return feeds


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _batches(model: onnx.ModelProto) -> tuple[int, ...]:
    dim0 = model.graph.input[0].type.tensor_type.shape.dim
    if dim0 and dim0[0].HasField("dim_value"):
        return (dim0[0].dim_value,)
    return _BATCHES


def assert_same_outputs(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> None:
    """Both models give the same outputs (atol 1e-6) under ONNX Runtime at every test batch."""
    for batch in _batches(original):
        feeds = _feeds(original, batch)
        expected, actual = _run(original, feeds), _run(rewritten, feeds)
        assert len(expected) == len(actual)
        for want, got in zip(expected, actual, strict=True):
            assert want.shape == got.shape, f"batch {batch}: shape {got.shape} != {want.shape}"
            np.testing.assert_allclose(got, want, rtol=0, atol=_ATOL, err_msg=f"batch {batch}")


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def _signature(model: onnx.ModelProto) -> tuple[list[bytes], list[bytes], list]:
    graph = model.graph
    return (
        [v.SerializeToString() for v in graph.input],
        [v.SerializeToString() for v in graph.output],
        [(o.domain, o.version) for o in model.opset_import],
    )


def _check_case(case: Case) -> gap.GapResult:
    original_bytes = case.model.SerializeToString()
    result = canonicalize_gap_head(case.model)
    assert case.model.SerializeToString() == original_bytes, "input proto was modified"
    assert _ops(result.model) == case.ops
    assert len(result.rewrites) == case.rewrites
    assert result.modified == bool(case.rewrites)
    assert _signature(result.model) == _signature(case.model)
    onnx.checker.check_model(result.model, full_check=True)
    assert_same_outputs(case.model, result.model)
    return result


# Case 1: ReduceMean over the spatial axes, every form the exporters produce.
REDUCE_MEAN_CASES = [
    # opset 13: axes as an attribute
    Case(
        "op13-attr-23-keep1-flatten",
        _model("m = ReduceMean<axes=[2, 3], keepdims=1>(f)\ny = Flatten<axis=1>(m)", opset=13),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op13-attr-32-keep0",
        _model("y = ReduceMean<axes=[3, 2], keepdims=0>(f)", opset=13),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op13-attr-neg-keepabsent-reshape",
        _model(
            "m = ReduceMean<axes=[-2, -1]>(f)\ny = Reshape(m, shape)",
            opset=13,
            inits=("int64[2] shape = {0, -1}",),
        ),
        ["Conv", "GlobalAveragePool", "Reshape"],
        1,
    ),
    Case(
        "op13-attr-mixed-keep0-gemm",
        _model(
            "p = ReduceMean<axes=[-1, 2], keepdims=0>(f)\ny = Gemm(p, wfc)",
            opset=13,
            y="float[batch,2] y",
            inits=(_FC_W,),
        ),
        ["Conv", "GlobalAveragePool", "Flatten", "Gemm"],
        1,
    ),
    Case(
        "op13-attr-keep1-output-4d",
        _model("y = ReduceMean<axes=[2, 3]>(f)", opset=13, y="float[batch,4,1,1] y"),
        ["Conv", "GlobalAveragePool"],
        1,
    ),
    # opset 18: axes as an input (Constant node or initializer)
    Case(
        "op18-const-23-keep1-flatten",
        _model(
            "axes = Constant<value = int64[2] {2, 3}>()\n"
            "m = ReduceMean<keepdims=1>(f, axes)\ny = Flatten<axis=1>(m)",
            opset=18,
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op18-init-neg-keep0",
        _model(
            "y = ReduceMean<keepdims=0>(f, axes)",
            opset=18,
            ir_version=9,
            inits=("int64[2] axes = {-2, -1}",),
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op18-init-32-keepabsent-reshape",
        _model(
            "m = ReduceMean(f, axes)\ny = Reshape(m, shape)",
            opset=18,
            inits=("int64[2] axes = {3, 2}", "int64[2] shape = {0, -1}"),
        ),
        ["Conv", "GlobalAveragePool", "Reshape"],
        1,
    ),
    Case(
        "op18-const-mixed-keep0-gemm",
        _model(
            "axes = Constant<value = int64[2] {-1, 2}>()\n"
            "p = ReduceMean<keepdims=0>(f, axes)\ny = Gemm(p, wfc)",
            opset=18,
            y="float[batch,2] y",
            inits=(_FC_W,),
        ),
        ["Conv", "GlobalAveragePool", "Flatten", "Gemm"],
        1,
    ),
    Case(
        "op18-noop-flag-with-axes",  # noop_with_empty_axes only matters for empty axes
        _model(
            "y = ReduceMean<keepdims=0, noop_with_empty_axes=1>(f, axes)",
            opset=18,
            inits=("int64[2] axes = {2, 3}",),
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op21-ir10-const-2neg1-keep1-flatten",
        _model(
            "axes = Constant<value = int64[2] {2, -1}>()\n"
            "m = ReduceMean(f, axes)\ny = Flatten<axis=1>(m)",
            opset=21,
            ir_version=10,
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op18-static-batch-two-heads",
        _model(
            "a = ReduceMean<keepdims=0>(f, axes)\n"
            "b = ReduceMean<keepdims=0>(f, axes)\ny = Add(a, b)",
            opset=18,
            x="float[2,3,8,8] x",
            y="float[2,4] y",
            inits=("int64[2] axes = {2, 3}",),
        ),
        ["Conv", "GlobalAveragePool", "Flatten", "GlobalAveragePool", "Flatten", "Add"],
        2,
    ),
]

# Case 2: AveragePool whose kernel covers the whole static spatial extent.
AVERAGE_POOL_CASES = [
    Case(
        "op13-8x8-flatten",
        _model("p = AveragePool<kernel_shape=[8, 8]>(f)\ny = Flatten<axis=1>(p)", opset=13),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op18-8x8-strides8-reshape",
        _model(
            "p = AveragePool<kernel_shape=[8, 8], strides=[8, 8]>(f)\ny = Reshape(p, shape)",
            opset=18,
            inits=("int64[2] shape = {0, -1}",),
        ),
        ["Conv", "GlobalAveragePool", "Reshape"],
        1,
    ),
    Case(
        "op17-zero-pads-ceil-stride3-count-pad",
        _model(
            "p = AveragePool<kernel_shape=[8, 8], pads=[0, 0, 0, 0], strides=[3, 3], "
            "ceil_mode=1, count_include_pad=1>(f)\ny = Flatten<axis=1>(p)",
            opset=17,
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op19-valid-dilations1",
        _model(
            'p = AveragePool<kernel_shape=[8, 8], auto_pad="VALID", dilations=[1, 1]>(f)\n'
            "y = Flatten<axis=1>(p)",
            opset=19,
            ir_version=9,
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op13-same-upper-stride8",  # SAME with stride >= input pads nothing
        _model(
            'p = AveragePool<kernel_shape=[8, 8], auto_pad="SAME_UPPER", strides=[8, 8]>(f)\n'
            "y = Flatten<axis=1>(p)",
            opset=13,
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op13-non-square-8x6",
        _model(
            "p = AveragePool<kernel_shape=[8, 6]>(f)\ny = Flatten<axis=1>(p)",
            opset=13,
            x="float[batch,3,8,6] x",
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op13-1d-kernel8",
        onnx.parser.parse_model(
            """
            <ir_version: 8, opset_import: ["" : 13]>
            head (float[batch,4,8] x) => (float[batch,4,1] y) {
                y = AveragePool<kernel_shape=[8]>(x)
            }
            """
        ),
        ["GlobalAveragePool"],
        1,
    ),
]


# Case 2, padded: one window over the whole map, the padding left out of the mean (GoogLeNet's
# head as Caffe2's converter wrote it: a 6x6 map, kernel 7x7, pads [0, 0, 1, 1]).
_MAP_6X6 = "float[batch,3,6,6] x"
PADDED_AVERAGE_POOL_CASES = [
    Case(
        "op9-googlenet-7x7-pads-end",
        _model(
            "p = AveragePool<kernel_shape=[7, 7], pads=[0, 0, 1, 1]>(f)\ny = Flatten<axis=1>(p)",
            opset=9,
            x=_MAP_6X6,
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op13-8x8-pads-both-ends-stride4",
        _model(
            "p = AveragePool<kernel_shape=[8, 8], pads=[1, 1, 1, 1], strides=[4, 4], "
            "count_include_pad=0>(f)\ny = Flatten<axis=1>(p)",
            opset=13,
            x=_MAP_6X6,
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "op19-kernel-equal-pads-end-less-than-stride-count-pad",  # the window reaches no padding
        _model(
            "p = AveragePool<kernel_shape=[6, 6], pads=[0, 0, 1, 1], strides=[2, 2], "
            "count_include_pad=1>(f)\ny = Flatten<axis=1>(p)",
            opset=19,
            ir_version=9,
            x=_MAP_6X6,
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
]

# Case 3: not a global average, left exactly as it is.
UNCHANGED_CASES = [
    Case(
        "avgpool-partial-2x2",
        _model(
            "p = AveragePool<kernel_shape=[2, 2], strides=[2, 2]>(f)\ny = Flatten<axis=1>(p)",
            opset=13,
            y="float[batch,64] y",
        ),
        ["Conv", "AveragePool", "Flatten"],
        0,
    ),
    Case(
        "avgpool-padded",
        _model(
            "p = AveragePool<kernel_shape=[8, 8], pads=[1, 1, 1, 1]>(f)\ny = Flatten<axis=1>(p)",
            opset=13,
            y="float[batch,36] y",
        ),
        ["Conv", "AveragePool", "Flatten"],
        0,
    ),
    Case(
        "avgpool-padding-counted",  # count_include_pad=1: the mean of 36 cells over 49
        _model(
            "p = AveragePool<kernel_shape=[7, 7], pads=[0, 0, 1, 1], count_include_pad=1>(f)\n"
            "y = Flatten<axis=1>(p)",
            opset=13,
            x=_MAP_6X6,
        ),
        ["Conv", "AveragePool", "Flatten"],
        0,
    ),
    Case(
        "avgpool-padded-two-windows",  # stride 1 over pads [1, 1, 1, 1]: 2x2 windows
        _model(
            "p = AveragePool<kernel_shape=[7, 7], pads=[1, 1, 1, 1]>(f)\ny = Flatten<axis=1>(p)",
            opset=13,
            x=_MAP_6X6,
            y="float[batch,16] y",
        ),
        ["Conv", "AveragePool", "Flatten"],
        0,
    ),
    Case(
        "avgpool-padded-ceil-two-windows",  # ceil_mode rounds (6 + 1 - 6) / 2 up: two windows
        _model(
            "p = AveragePool<kernel_shape=[6, 6], pads=[0, 0, 1, 1], strides=[2, 2], "
            "ceil_mode=1>(f)\ny = Flatten<axis=1>(p)",
            opset=13,
            x=_MAP_6X6,
            y="float[batch,16] y",
        ),
        ["Conv", "AveragePool", "Flatten"],
        0,
    ),
    Case(
        "avgpool-padded-begin-misses-the-end",  # a 7x7 window from -2 stops before row 5
        _model(
            "p = AveragePool<kernel_shape=[7, 7], pads=[2, 2, 0, 0], strides=[7, 7]>(f)\n"
            "y = Flatten<axis=1>(p)",
            opset=13,
            x=_MAP_6X6,
        ),
        ["Conv", "AveragePool", "Flatten"],
        0,
    ),
    Case(
        "avgpool-same-upper-stride1",
        _model(
            'p = AveragePool<kernel_shape=[8, 8], auto_pad="SAME_UPPER">(f)\n'
            "y = Flatten<axis=1>(p)",
            opset=13,
            y="float[batch,256] y",
        ),
        ["Conv", "AveragePool", "Flatten"],
        0,
    ),
    Case(
        "avgpool-dynamic-hw",
        _model(
            "p = AveragePool<kernel_shape=[8, 8]>(f)\ny = Flatten<axis=1>(p)",
            opset=13,
            x="float[batch,3,h,w] x",
            y="float[batch,d] y",
        ),
        ["Conv", "AveragePool", "Flatten"],
        0,
    ),
    Case(
        "reducemax-spatial",
        _model("y = ReduceMax<axes=[2, 3], keepdims=0>(f)", opset=13),
        ["Conv", "ReduceMax"],
        0,
    ),
    Case(
        "reducemean-channels",
        _model(
            "m = ReduceMean<axes=[1]>(f)\ny = Flatten<axis=1>(m)", opset=13, y="float[batch,64] y"
        ),
        ["Conv", "ReduceMean", "Flatten"],
        0,
    ),
    Case(
        "reducemean-one-spatial-axis",
        _model(
            "y = ReduceMean<keepdims=0>(f, axes)",
            opset=18,
            y="float[batch,4,8] y",
            inits=("int64[1] axes = {3}",),
        ),
        ["Conv", "ReduceMean"],
        0,
    ),
    Case(
        "reducemean-nchw-axes-023",
        _model("y = ReduceMean<axes=[0, 2, 3], keepdims=0>(f)", opset=13, y="float[4] y"),
        ["Conv", "ReduceMean"],
        0,
    ),
    Case(
        "reducemean-axes-graph-input",
        _model(
            "y = ReduceMean<keepdims=0>(f, axes)",
            opset=18,
            extra_inputs="int64[2] axes",
            y="float[batch,4] y",
        ),
        ["Conv", "ReduceMean"],
        0,
    ),
    Case(
        "reducemean-axes-overridable-initializer",
        _model(
            "y = ReduceMean<keepdims=0>(f, axes)",
            opset=18,
            extra_inputs="int64[2] axes",
            inits=("int64[2] axes = {2, 3}",),
        ),
        ["Conv", "ReduceMean"],
        0,
    ),
    Case(
        "reducemean-axes-computed",
        _model(
            "s = Shape(f)\nrank = Size(s)\naxes = Sub(rank, two_one)\n"
            "y = ReduceMean<keepdims=0>(f, axes)",
            opset=18,
            inits=("int64[2] two_one = {2, 1}",),
        ),
        ["Conv", "Shape", "Size", "Sub", "ReduceMean"],
        0,
    ),
    Case(
        "reducemean-empty-axes-all",
        _model("y = ReduceMean<keepdims=0>(f)", opset=13, y="float y"),
        ["Conv", "ReduceMean"],
        0,
    ),
    Case(
        "reducemean-empty-axes-noop",
        _model(
            "m = ReduceMean<noop_with_empty_axes=1>(f)\ny = Flatten<axis=1>(m)",
            opset=18,
            y="float[batch,256] y",
        ),
        ["Conv", "ReduceMean", "Flatten"],
        0,
    ),
    Case(
        "reducemean-unknown-rank",  # a Reshape to a run-time shape of unknown length
        _model(
            "m = Reshape(f, shape_in)\ny = ReduceMean<axes=[2, 3], keepdims=0>(m)",
            opset=13,
            extra_inputs="int64[k] shape_in",
        ),
        ["Conv", "Reshape", "ReduceMean"],
        0,
    ),
    Case(
        "reducemean-rank3-last-axes",  # a LayerNorm-style mean, not a pooling head
        onnx.parser.parse_model(
            """
            <ir_version: 8, opset_import: ["" : 13]>
            head (float[batch,8,16] x) => (float[batch,1,1] y) {
                y = ReduceMean<axes=[1, 2]>(x)
            }
            """
        ),
        ["ReduceMean"],
        0,
    ),
    Case(
        "reducemean-int32",  # GlobalAveragePool takes floats only
        onnx.parser.parse_model(
            """
            <ir_version: 8, opset_import: ["" : 13]>
            head (int32[batch,4,8,8] x) => (int32[batch,4] y) {
                y = ReduceMean<axes=[2, 3], keepdims=0>(x)
            }
            """
        ),
        ["ReduceMean"],
        0,
    ),
    Case(
        "already-global-average-pool",
        _model("p = GlobalAveragePool(f)\ny = Flatten<axis=1>(p)", opset=17),
        ["Conv", "GlobalAveragePool", "Flatten"],
        0,
    ),
]


# Case 1, channels-last: Keras's GlobalAveragePooling2D as tf2onnx writes it.
CHANNELS_LAST_CASES = [
    Case(
        "nhwc-keep0",
        _model(
            "t = Transpose<perm=[0, 2, 3, 1]>(f)\ny = ReduceMean<axes=[1, 2], keepdims=0>(t)",
            opset=13,
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "nhwc-op18-neg-keep1",
        _model(
            "t = Transpose<perm=[0, 2, 3, 1]>(f)\n"
            "axes = Constant<value = int64[2] {-2, -3}>()\n"
            "y = ReduceMean<keepdims=1>(t, axes)",
            opset=18,
            y="float[batch,1,1,4] y",
        ),
        ["Conv", "GlobalAveragePool", "Transpose"],
        1,
    ),
]


@pytest.mark.parametrize("case", CHANNELS_LAST_CASES, ids=lambda c: c.id)
def test_a_channels_last_mean_becomes_global_average_pool(case: Case) -> None:
    result = _check_case(case)
    assert [r.rule for r in result.rewrites] == ["ChannelsLastReduceMeanToGlobalAveragePool"]


@pytest.mark.parametrize(
    "perm,axes",
    [([0, 1, 3, 2], [1, 2]), ([0, 3, 1, 2], [1, 2])],
    ids=["perm-0132", "perm-0312"],
)
def test_a_transposed_mean_that_is_not_over_h_and_w_is_left_alone(perm, axes) -> None:
    body = f"t = Transpose<perm={perm}>(f)\nm = ReduceMean<axes={axes}, keepdims=0>(t)\n"
    body += "y = Flatten<axis=1>(m)"
    model = _model(body, opset=13, y="float[batch,N] y")
    result = canonicalize_gap_head(model)
    assert not result.modified


# Case 1, channels-last by elementwise ops: jax2onnx's residual block, added and activated in
# NHWC after each Conv's Transpose back.
_NHWC_T = "Transpose<perm=[0, 2, 3, 1]>"
ELEMENTWISE_CHANNELS_LAST_CASES = [
    Case(
        "residual-relu-keep0",
        _model(
            f"a = {_NHWC_T}(f)\ng = Relu(f)\nb = {_NHWC_T}(g)\ns = Add(a, b)\nr = Relu(s)\n"
            "y = ReduceMean<axes=[1, 2], keepdims=0>(r)",
            opset=13,
        ),
        [
            *("Conv", "Transpose", "Relu", "Transpose", "Add", "Relu", "Transpose"),
            *("GlobalAveragePool", "Flatten"),
        ],
        1,
    ),
    Case(
        "bias-clip-op18-keep1",
        _model(
            f"a = {_NHWC_T}(f)\nb = Add(a, bias)\nc = Clip(b, lo, hi)\n"
            "axes = Constant<value = int64[2] {2, -3}>()\ny = ReduceMean<keepdims=1>(c, axes)",
            opset=18,
            y="float[batch,1,1,4] y",
            inits=(
                "float[4] bias = {0.5, -1.0, 0.25, 2.0}",
                "float lo = {0.0}",
                "float hi = {6.0}",
            ),
        ),
        ["Conv", "Transpose", "Add", "Clip", "Transpose", "GlobalAveragePool", "Transpose"],
        1,
    ),
    Case(  # tf2onnx's int8 TFLite route: the Transpose moves int8, a QDQ pair around it
        "qdq-transposed-int8-keep0",
        _model(
            f"q = QuantizeLinear(f, scale, zero)\nt = {_NHWC_T}(q)\n"
            "d = DequantizeLinear(t, scale, zero)\ny = ReduceMean<axes=[1, 2], keepdims=0>(d)",
            opset=13,
            inits=("float scale = {0.05}", "int8 zero = {3}"),
        ),
        [
            *("Conv", "QuantizeLinear", "Transpose", "DequantizeLinear", "Transpose"),
            *("GlobalAveragePool", "Flatten"),
        ],
        1,
    ),
]


@pytest.mark.parametrize("case", ELEMENTWISE_CHANNELS_LAST_CASES, ids=lambda c: c.id)
def test_a_mean_of_channels_last_elementwise_ops_becomes_global_average_pool(case: Case) -> None:
    result = _check_case(case)  # numerically equal to the original under ONNX Runtime
    (rewrite,) = result.rewrites
    assert rewrite.rule == "ElementwiseChannelsLastReduceMeanToGlobalAveragePool"
    assert rewrite.detail.startswith("channels-last by elementwise ops, +Transpose to NCHW")


@pytest.mark.parametrize(
    "body,extra",
    [
        (f"a = {_NHWC_T}(f)\ns = Add(a, z)\nr = Relu(s)", "float[batch,8,8,4] z"),
        ("t = Transpose<perm=[0, 3, 1, 2]>(f)\nr = Relu(t)", ""),
        ("r = Relu(f)", ""),
        (f"a = {_NHWC_T}(f)\nm = MaxPool<kernel_shape=[1, 1]>(a)\nr = Relu(m)", ""),
    ],
    ids=["an-operand-of-unknown-layout", "another-perm", "nchw-no-transpose", "not-elementwise"],
)
def test_a_mean_over_axes_1_and_2_not_known_to_be_channels_last_is_left_alone(body, extra):
    body += "\nm2 = ReduceMean<axes=[1, 2], keepdims=0>(r)\ny = Flatten<axis=1>(m2)"
    model = _model(body, opset=13, y="float[batch,N] y", extra_inputs=extra)
    result = canonicalize_gap_head(model)
    assert not result.modified


def test_a_mean_over_axes_1_and_2_of_constants_alone_is_left_alone():
    """The walk back from the mean found no Transpose at all (a Relu of a constant): it failed an
    assertion inside the lowering instead of leaving the mean as it is."""
    cells = ", ".join(["1.5"] * 64)
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[N, 4] x) => (float[N, 4] y) <float[1, 4, 4, 4] c = {{{cells}}}> {{
            r = Relu(c)
            m = ReduceMean<axes=[1, 2], keepdims=0>(r)
            y = Add(x, m)
        }}
        """
    )
    assert not canonicalize_gap_head(model, "all").modified


# Case 1, a sum over H and W divided by their cells: Flax Linen's mean as jax2onnx writes it
# (ReduceSum takes its axes as an input from opset 13).
_AXES_23 = "int64[2] axes23 = {2, 3}"
_AXES_12 = "int64[2] axes12 = {1, 2}"
SUM_CASES = [
    Case(
        "nchw-sum-div-keep0",
        _model(
            "s = ReduceSum<keepdims=0>(f, axes23)\ny = Div(s, cells)",
            opset=13,
            inits=(_AXES_23, "float cells = {64.0}"),
        ),
        ["Conv", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "nchw-reciprocal-times-sum-keep1",
        _model(
            "s = ReduceSum<keepdims=1>(f, axes23)\ny = Mul(inverse, s)",
            opset=13,
            y="float[batch,4,1,1] y",
            inits=(_AXES_23, "float[1] inverse = {0.015625}"),
        ),
        ["Conv", "GlobalAveragePool"],
        1,
    ),
    Case(
        "nhwc-relu-sum-div-keep0",
        _model(
            f"a = {_NHWC_T}(f)\nr = Relu(a)\ns = ReduceSum<keepdims=0>(r, axes12)\n"
            "y = Div(s, cells)",
            opset=13,
            inits=(_AXES_12, "float cells = {64.0}"),
        ),
        ["Conv", "Transpose", "Relu", "Transpose", "GlobalAveragePool", "Flatten"],
        1,
    ),
    Case(
        "nhwc-transposed-sum-div-keep1",
        _model(
            f"a = {_NHWC_T}(f)\ns = ReduceSum<keepdims=1>(a, axes12)\ny = Div(s, cells)",
            opset=13,
            y="float[batch,1,1,4] y",
            inits=(_AXES_12, "float cells = {64.0}"),
        ),
        ["Conv", "GlobalAveragePool", "Transpose"],
        1,
    ),
]


@pytest.mark.parametrize("case", SUM_CASES, ids=lambda c: c.id)
def test_a_sum_over_h_and_w_divided_by_their_cells_becomes_global_average_pool(case):
    result = _check_case(case)  # numerically equal to the original under ONNX Runtime
    (rewrite,) = result.rewrites
    assert rewrite.op_type == "ReduceSum"
    assert rewrite.detail.startswith(("/ 64 after it, ", "* 0.015625 after it, "))
    added = result.model.graph.node[-3:]  # a Transpose to NCHW only where none is undone
    assert ("+Transpose to NCHW" in rewrite.detail) == (added[0].op_type == "Transpose")
    names = {i.name for i in result.model.graph.initializer}
    assert not names & {"cells", "inverse", "axes23", "axes12"}  # gone with their last user


@pytest.mark.parametrize(
    "body,inits",
    [
        ("s = ReduceSum<keepdims=0>(f, axes23)\ny = Div(s, cells)", "float cells = {32.0}"),
        ("s = ReduceSum<keepdims=0>(f, axes23)\ny = Mul(s, cells)", "float cells = {64.0}"),
        (
            "s = ReduceSum<keepdims=0>(f, axes23)\ny = Div(s, cells)",
            "float[4] cells = {64, 64, 64, 64}",
        ),
        (
            "r = Relu(f)\ns = ReduceSum<keepdims=0>(r, axes12)\ny = Div(s, cells)",
            "float cells = {64.0}",
        ),
    ],
    ids=["divided-by-half-the-cells", "times-the-cells", "a-divisor-per-channel", "nchw-axes-1-2"],
)
def test_a_sum_that_is_not_the_mean_of_the_map_is_left_alone(body, inits):
    model = _model(body, opset=13, y="float[batch,N] y", inits=(_AXES_23, _AXES_12, inits))
    assert not canonicalize_gap_head(model).modified


@pytest.mark.parametrize("case", REDUCE_MEAN_CASES, ids=lambda c: c.id)
def test_reduce_mean_becomes_global_average_pool(case: Case) -> None:
    result = _check_case(case)
    assert all(r.op_type == "ReduceMean" for r in result.rewrites)
    assert all(r.rule == "ReduceMeanToGlobalAveragePool" for r in result.rewrites)
    # The axes constants/initializers are gone with their last user.
    assert "axes" not in {i.name for i in result.model.graph.initializer}


@pytest.mark.parametrize("case", AVERAGE_POOL_CASES, ids=lambda c: c.id)
def test_full_average_pool_becomes_global_average_pool(case: Case) -> None:
    result = _check_case(case)
    assert [(r.op_type, r.rule) for r in result.rewrites] == [
        ("AveragePool", "AveragePoolToGlobalAveragePool")
    ]


@pytest.mark.parametrize("case", PADDED_AVERAGE_POOL_CASES, ids=lambda c: c.id)
def test_a_padded_average_pool_with_one_window_over_the_map_becomes_global(case: Case) -> None:
    result = _check_case(case)  # numerically equal to the original under ONNX Runtime
    (rewrite,) = result.rewrites
    assert rewrite.rule == "AveragePoolToGlobalAveragePool"
    assert "not counted" in rewrite.detail or "pads" not in rewrite.detail


def test_the_googlenet_head_names_its_padding() -> None:
    (rewrite,) = canonicalize_gap_head(PADDED_AVERAGE_POOL_CASES[0].model).rewrites
    assert rewrite.detail == "kernel 7x7, pads [0, 0, 1, 1] outside the 6x6 map, not counted"


@pytest.mark.parametrize("case", UNCHANGED_CASES, ids=lambda c: c.id)
def test_not_a_global_average_is_left_alone(case: Case) -> None:
    result = _check_case(case)
    assert not result.modified
    assert _ops(result.model) == _ops(case.model)


def test_symbolic_batch_survives() -> None:
    case = REDUCE_MEAN_CASES[1]
    result = canonicalize_gap_head(case.model)
    for value in (result.model.graph.input[0], result.model.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert_same_outputs(case.model, result.model)


def test_rewrites_are_reported_by_name_or_position() -> None:
    named = _model(
        "m = ReduceMean<axes=[2, 3], keepdims=0>(f)\ny = Identity(m)",
        opset=13,
    )
    named.graph.node[1].name = "node_mean"
    (rewrite,) = canonicalize_gap_head(named).rewrites
    assert rewrite == GapRewrite(
        "node_mean", "ReduceMean", "ReduceMeanToGlobalAveragePool", "keepdims=0, +Flatten"
    )
    assert str(rewrite) == ("ReduceMean 'node_mean' -> GlobalAveragePool (keepdims=0, +Flatten)")
    (pool,) = canonicalize_gap_head(AVERAGE_POOL_CASES[0].model).rewrites
    assert str(pool) == "AveragePool 'AveragePool#1' -> GlobalAveragePool (kernel 8x8)"


@pytest.mark.parametrize("case", REDUCE_MEAN_CASES + AVERAGE_POOL_CASES, ids=lambda c: c.id)
def test_idempotent(case: Case) -> None:
    once = canonicalize_gap_head(case.model)
    twice = canonicalize_gap_head(once.model)
    assert twice.rewrites == ()
    assert _ops(twice.model) == _ops(once.model)


def test_unknown_rank_failure_says_why() -> None:
    model = ir.serde.deserialize_model(
        next(c for c in UNCHANGED_CASES if c.id == "reducemean-unknown-rank").model
    )
    ir.passes.common.ShapeInferencePass()(model)  # even with inference, the rank stays unknown
    tracer = MatchingTracer()
    gap_rules().apply_to_model(model, tracer=tracer)
    reasons = [
        info.match_result.reason
        for rule, infos in tracer.best_matches_map.items()
        if rule.name == "ReduceMeanToGlobalAveragePool"
        for info in infos
    ]
    assert reasons
    assert all("rank" in reason and "unknown" in reason for reason in reasons)


def test_pass_on_ir_model_reports_rewrites() -> None:
    model = ir.serde.deserialize_model(REDUCE_MEAN_CASES[0].model)
    ir.passes.common.ShapeInferencePass()(model)
    gap_pass = CanonicalizeGapHeadPass()
    result = gap_pass(model)
    assert isinstance(result, ir.passes.PassResult)
    assert result.modified
    assert result.model is model
    assert [r.op_type for r in gap_pass.rewrites] == ["ReduceMean"]
    assert not gap_pass(model).modified
    assert gap_pass.rewrites == ()


def test_wrong_replacement_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numeric comparison can fail: a GlobalMaxPool in place of the mean is caught."""

    def wrong_rewrite(self, op, x, mean):
        return op.Flatten(op.GlobalMaxPool(x), axis=1)

    monkeypatch.setattr(gap.ReduceMeanToGlobalAveragePool, "rewrite", wrong_rewrite)
    case = REDUCE_MEAN_CASES[1]
    result = canonicalize_gap_head(case.model)
    assert _ops(result.model) == ["Conv", "GlobalMaxPool", "Flatten"]
    onnx.checker.check_model(result.model, full_check=True)
    with pytest.raises(AssertionError):
        assert_same_outputs(case.model, result.model)


def _squeeze_excite_model() -> onnx.ModelProto:
    """A squeeze-excitation block's mean inside the network, then the head's mean and a MatMul."""
    body = """
            axes = Constant <value = int64[2] {2, 3}> ()
            s = ReduceMean <keepdims = 1> (f, axes)
            g = Sigmoid(s)
            h = Mul(f, g)
            p = ReduceMean <keepdims = 0> (h, axes)
            y = MatMul(p, wfc)
    """
    return _model(body, opset=18, y="float[batch,2] y", inits=(_FC_W,))


def test_the_default_lowering_rewrites_the_heads_mean_only_and_all_every_one() -> None:
    model = _squeeze_excite_model()
    assert gap.head_pools(model) == frozenset({"p"})
    head = canonicalize_gap_head(model)
    assert _ops(head.model) == [
        "Conv", "Constant", "ReduceMean", "Sigmoid", "Mul", "GlobalAveragePool", "Flatten",
        "MatMul",
    ]  # fmt: skip
    assert [r.op_type for r in head.rewrites] == ["ReduceMean"]
    every = canonicalize_gap_head(model, "all")
    assert _ops(every.model).count("GlobalAveragePool") == 2 and len(every.rewrites) == 2
    for result in (head, every):
        assert_same_outputs(model, result.model)
    with pytest.raises(OnnxEdgeError, match="expected head or all"):
        canonicalize_gap_head(model, "some")
