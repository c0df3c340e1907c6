"""The int8 variants that deal with the first convolution's 3 input channels: the padding pass on
tiny models written as ONNX text (op types, the same numbers under ONNX Runtime, what it refuses),
and `onnxedge optimize --int8-first-conv` making both variants, each gated as int8 is."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from cli_assertions import unwrap
from click.testing import CliRunner
from test_optimize import dark_data, data, trained_bundle  # noqa: F401 (fixtures)

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.cli import main
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.variants import INT8_CONV1_FP32, INT8_PAD4
from onnxedge.runtime.variants.first_conv import PadFirstConvChannels, first_conv_block
from onnxedge.runtime.variants.graph import image_conv_weights

CONV = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[N,{c},5,5] x) => (float[N,2,5,5] y)
<float[2,{wc},3,3] w = {{{weights}}}>
{{
  h = Conv <pads = [1, 1, 1, 1], group = {group}> (x, w)
  r = Relu (h)
  y = MaxPool <kernel_shape = [1, 1]> (r)
}}
"""


def _model(c: int = 3, group: int = 1) -> onnx.ModelProto:
    wc = c // group
    weights = ", ".join(f"{v:.3f}" for v in np.linspace(-1, 1, 2 * wc * 9))
    return onnx.parser.parse_model(CONV.format(c=c, wc=wc, weights=weights, group=group))


def _run(model: onnx.ModelProto, x: np.ndarray, tmp_path: Path, name: str) -> np.ndarray:
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    session = make_session(path, SessionConfig(provider="cpu", threads=1))
    return session.run(None, {"x": x})[0]


def test_three_channels_are_padded_to_four_with_the_same_numbers(tmp_path):
    proto = _model()
    model = ir.from_proto(proto)
    result = PadFirstConvChannels()(model)
    assert result.modified
    padded = ir.to_proto(result.model)
    onnx.checker.check_model(padded, full_check=True)
    assert [n.op_type for n in padded.graph.node] == ["Pad", "Conv", "Relu", "MaxPool"]
    weight = next(i for i in padded.graph.initializer if i.name == "w")
    assert list(weight.dims) == [2, 4, 3, 3]
    assert not onnx.numpy_helper.to_array(weight)[:, 3].any()  # the added channel's weights
    assert padded.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3  # input unchanged
    x = np.random.default_rng(0).random((2, 3, 5, 5), dtype=np.float32)
    np.testing.assert_array_equal(_run(padded, x, tmp_path, "p"), _run(proto, x, tmp_path, "o"))


def test_four_channels_are_left_as_they_are():
    result = PadFirstConvChannels()(ir.from_proto(_model(c=4)))
    assert not result.modified


def test_a_grouped_first_conv_is_refused_with_the_reason():
    with pytest.raises(OnnxEdgeError, match="grouped"):
        PadFirstConvChannels()(ir.from_proto(_model(c=3, group=3)))


def test_the_first_conv_block_is_the_conv_and_what_follows_it_up_to_the_next_conv():
    model = _model()
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}"
    assert first_conv_block(model) == ["n0", "n1", "n2"]


TWO_CONVS = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[N,3,5,5] x) => (float[N,2,5,5] y)
<float[2,3,1,1] w1, float[2,2,1,1] w2, float[1] s, float[3,2,1,1] side>
{
  scaled = Mul (x, s)
  h = Conv (scaled, w1)
  r = Relu (h)
  y = Conv (r, w2)
  other = Conv (r, side)
}
"""


def test_the_image_convs_are_those_the_input_reaches_without_another_product():
    """Through in-graph scaling (and int8-pad4's Pad) to the first conv; not past it; not a
    conv left in float (``skip``)."""
    model, direct = _two_convs(TWO_CONVS), _two_convs(TWO_CONVS.replace("(scaled, w1)", "(x, w1)"))
    assert image_conv_weights(model) == image_conv_weights(direct) == ["w1"]
    assert image_conv_weights(model, skip=["n1"]) == []
    padded = ir.to_proto(PadFirstConvChannels()(ir.from_proto(_model())).model)
    assert [n.op_type for n in padded.graph.node][:2] == ["Pad", "Conv"]
    assert image_conv_weights(padded) == ["w"]
    no_initializer = onnx.parser.parse_model(TWO_CONVS)  # its weights are inputs, not constants
    assert image_conv_weights(no_initializer) == []


def _two_convs(text: str) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}"
    shapes = {"w1": (2, 3, 1, 1), "w2": (2, 2, 1, 1), "s": (1,), "side": (3, 2, 1, 1)}
    model.graph.initializer.extend(
        onnx.numpy_helper.from_array(np.ones(shape, np.float32), name)
        for name, shape in shapes.items()
    )
    return model


def _optimize(*args: object):
    return CliRunner().invoke(main, ["optimize", *map(str, args)])


def test_optimize_makes_both_variants_gated_and_the_classifier_runs_them(
    trained_bundle,  # noqa: F811
    data,  # noqa: F811
    tmp_path,
):
    out = tmp_path / "edge"
    result = _optimize(trained_bundle, "--data", data, "--out", out, "--int8-first-conv",
                       "--calibration-size", 16)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line.split(" | ")[:2] for line in unwrap(result.stdout).splitlines()]
    assert lines == [["PASSED", INT8_CONV1_FP32], ["PASSED", INT8_PAD4]]
    bundle = Bundle.open(out)
    assert {n: v.gated for n, v in bundle.variants.items()} == {
        INT8_CONV1_FP32: True,
        INT8_PAD4: True,
    }
    pad4 = onnx.load(bundle.variant_model(INT8_PAD4))
    assert pad4.graph.node[0].op_type in ("QuantizeLinear", "Pad", "DequantizeLinear")
    weights = {i.name: list(i.dims) for i in pad4.graph.initializer}
    assert weights["conv1.weight_quantized"][1] == 4  # int8 weights on 4 input channels
    conv1 = onnx.load(bundle.variant_model(INT8_CONV1_FP32))
    first = next(n for n in conv1.graph.node if n.op_type == "Conv")
    assert first.input[0] == conv1.graph.input[0].name and first.input[1] == "conv1.weight"
    images = sorted((data / "test").rglob("*.png"))
    fp32 = Classifier.from_bundle(out).predict_images(images)
    for variant in (INT8_CONV1_FP32, INT8_PAD4):
        clf = Classifier.from_bundle(out, variant=variant)
        got = clf.predict_images(images)
        assert [p.label for p in got] == [p.label for p in fp32]


def test_each_misses_its_gate_as_int8_does(trained_bundle, dark_data, tmp_path):  # noqa: F811
    target = Path(shutil.copytree(trained_bundle, tmp_path / "bundle"))
    result = _optimize(target, "--data", dark_data, "--int8-first-conv")
    assert result.exit_code == 1, result.output
    failed = [line.split(" | ")[:2] for line in unwrap(result.stdout).splitlines()]
    assert failed == [["FAILED", INT8_CONV1_FP32], ["FAILED", INT8_PAD4]]
    assert Bundle.open(target).variants == {}
