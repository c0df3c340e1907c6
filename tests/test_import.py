"""`onnxedge import`: bundles of ONNX classifiers exported elsewhere, on models the tests write
(tests/import_models.py); every downstream command on them; bad input is one line and exit 1
with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import import_models as models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_assertions import assert_one_line_error, unwrap_markdown
from click.testing import CliRunner
from PIL import Image

from onnxedge.export.annotations import drop_contradicted_annotations
from onnxedge.export.batch import make_batch_dynamic, name_batch_dim
from onnxedge.export.interface import input_layout, kept_output, nchw_input
from onnxedge.export.onnx_reference import (
    cast_to_double,
    disagreement,
    make_reference,
    reference_evaluator,
)
from onnxedge.export.verify import verify_batch_step, verify_input_layout, verify_kept_output
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.check.check import default_opset
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.cli import main
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity import golden_inputs, load_golden


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = make_session(model.SerializeToString(), SessionConfig(provider="cpu"))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    makers = {
        "fixed": models.fixed_batch_reshape,
        "ocr": models.softmax_dynamic_width,
        "gray": models.grayscale_sigmoid,
        "mixing": models.batch_mixing,
        "nk11": models.conv_classifier_nk11,
        "nk11_opset9": lambda: models.conv_classifier_nk11(opset=9),
        "two_inputs": models.two_inputs,
        "tokens": models.token_input,
        "segmenter": models.segmenter,
        "detector": models.detector,
        "unknown_op": models.unknown_op,
        "paddle": models.paddle_style,
        "keras": models.channels_last,
        "keras_nhwc_head": lambda: models.channels_last("nhwc"),
        "two_heads": models.logits_and_probabilities,
    }
    return {name: models.save(make(), folder / f"{name}.onnx") for name, make in makers.items()}


@pytest.fixture(scope="module")
def bundles(files, tmp_path_factory) -> dict[str, Path]:
    """The good models imported once: fixed batch, pad-right OCR, grayscale, PaddlePaddle's,
    two of tf2onnx's channels-last ones."""
    root = tmp_path_factory.mktemp("imported")
    made = {
        "fixed": [files["fixed"]],
        "ocr": [
            files["ocr"],
            "--input-shape",
            "3,48,96",
            "--resize-mode",
            "pad-right",
            "--mean",
            "0.5,0.5,0.5",
            "--std",
            "0.5,0.5,0.5",
        ],
        "gray": [files["gray"], "--interpolation", "bicubic"],
        "paddle": [files["paddle"], "--input-shape", "3,16,24"],
        "keras": [files["keras"]],
        "keras_nhwc_head": [files["keras_nhwc_head"]],
    }
    for name, args in made.items():
        result = invoke("import", *args, "--out", root / name)
        assert result.exit_code == 0, result.output
    return {name: root / name for name in made}


def test_the_check_rows_fit_120_columns_without_verbose(files, tmp_path):
    model = onnx.load(str(files["gray"]))
    (gap,) = [node for node in model.graph.node if node.op_type == "GlobalAveragePool"]
    gap.name = "global_average_pool_" + "of_the_features" * 6  # a long name, as exporters write
    path = tmp_path / "long_names.onnx"
    onnx.save(model, str(path))
    short = invoke("import", path, "--out", tmp_path / "short")
    assert short.exit_code == 0, short.output
    assert "PASSED | gap_head |" in short.output
    assert max(len(line) for line in short.output.splitlines() if "PASSED" in line) <= 120
    whole = invoke("import", path, "--out", tmp_path / "whole", "-v")  # -v: one line each
    assert any(
        line.startswith("PASSED | gap_head |") and len(line) > 120
        for line in whole.output.splitlines()
    )


# --- the batch made dynamic ------------------------------------------------------------------


def test_a_fixed_batch_and_its_reshape_become_symbolic(files):
    original = onnx.load(str(files["fixed"]))
    result = make_batch_dynamic(original)
    assert result.fixed == 1 and not result.pinned_by
    assert result.rewrites == ("Reshape 'flatten': shape [1, -1] -> [0, -1]",)
    assert [n.op_type for n in result.model.graph.node] == [
        "Conv",
        "Relu",
        "AveragePool",
        "Constant",
        "Reshape",
        "Gemm",
    ]
    for value in (result.model.graph.input[0], result.model.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(0).random((7, 3, 32, 32), dtype=np.float32)
    rows = np.concatenate([run(original, x[i : i + 1]) for i in range(7)])
    np.testing.assert_array_equal(run(result.model, x), rows)
    assert verify_batch_step(original, result.model, 1)


def _runs_as_the_original(original, result, shape, *, seed: int, atol: float) -> None:
    """``result``'s model on a batch of ``shape`` gives the original's rows, each run at the
    original's fixed batch of 1, and passes the batch step's own check."""
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    rows = np.concatenate([run(original, x[i : i + 1]) for i in range(shape[0])])
    np.testing.assert_allclose(run(result.model, x), rows, rtol=0, atol=atol)
    assert verify_batch_step(original, result.model, 1)


@pytest.mark.parametrize("rest", [(-1,), (4,)])
def test_a_dynamo_reshape_with_allowzero_becomes_symbolic(rest):
    """torch's dynamo exporter writes allowzero=1 on every Reshape: ``[1, -1]`` and ``[1, 4]``
    (the traced batch and the classes) become ``[0, ...]`` with allowzero dropped."""
    original = models.fixed_batch_dynamo_reshape(rest=rest)
    result = make_batch_dynamic(original)
    assert not result.pinned_by, result.pinned_by
    assert result.rewrites == (
        f"Reshape 'view': shape {[1, *rest]} -> {[0, *rest]} (allowzero 1 -> 0)",
    )
    (reshape,) = [n for n in result.model.graph.node if n.op_type == "Reshape"]
    assert not [a for a in reshape.attribute if a.name == "allowzero" and a.i == 1]
    _runs_as_the_original(original, result, (5, 3, 16, 16), seed=1, atol=1e-6)


def test_an_allowzero_reshape_with_a_literal_zero_is_left_and_named():
    """A 0 in the shape with allowzero=1 is a literal zero (an empty tensor), not "copy this
    dim": the rule leaves it, and the node is named as what pins the batch."""
    original = models.fixed_batch_dynamo_reshape(rest=(0,))
    result = make_batch_dynamic(original)
    assert result.rewrites == ()
    assert "Reshape node 'view'" in result.pinned_by


def test_a_long_chain_of_channel_shuffles_is_freed_to_its_end():
    """Each reshape of a channel shuffle reads the one before it, so each round of the rules
    frees one more (shape inference shows the batch behind it only once the one before is
    rewritten): ShuffleNet's 16 units took 33 rounds. Every one is rewritten, however many."""
    shuffles = 12
    original = models.channel_shuffles(shuffles=shuffles)
    result = make_batch_dynamic(original)
    assert not result.pinned_by, result.pinned_by
    assert len(result.rewrites) == 2 * shuffles
    assert result.rewrites[-1] == (
        f"Reshape 'merge{shuffles - 1}': shape [1, 6, 8, 8] -> [0, 6, 8, 8] (allowzero 1 -> 0)"
    )
    _runs_as_the_original(original, result, (3, 3, 8, 8), seed=2, atol=1e-5)


@pytest.mark.parametrize(("op", "opset"), [("Resize", 13), ("Resize", 10), ("Upsample", 9)])
def test_a_reshape_behind_an_upsampling_is_freed(op, opset):
    """ONNX's shape inference turns a symbolic batch into a new unknown at a Resize by constant
    scales, so the reshape behind it did not show the batch and import failed at batch 2
    (pytorchcv's HRNet, residual attention and octave ResNets): the upsampling keeps the batch
    where its first scale is 1."""
    original = models.upsampled_branch(op, opset)
    result = make_batch_dynamic(original)
    assert not result.pinned_by, result.pinned_by
    assert result.rewrites == ("Reshape 'flatten': shape [1, -1] -> [0, -1]",)
    _runs_as_the_original(original, result, (3, 3, 16, 16), seed=3, atol=1e-6)


def test_an_upsampling_to_constant_sizes_follows_the_batch():
    """``F.interpolate(size=...)`` traced at batch 1 writes sizes [1, C, H, W], which pinned the
    batch (pytorchcv's SCNet): dim 0 of the sizes becomes the fed batch, attributes kept."""
    original = models.upsampled_branch(by="sizes")
    result = make_batch_dynamic(original)
    assert not result.pinned_by, result.pinned_by
    assert result.rewrites == (
        "Resize 'up': sizes [1, 8, 16, 16] -> [batch, 8, 16, 16]",
        "Reshape 'flatten': shape [1, -1] -> [0, -1]",
    )
    (resize,) = [n for n in result.model.graph.node if n.op_type == "Resize"]
    assert [(a.name, a.s) for a in resize.attribute] == [("mode", b"nearest")]
    _runs_as_the_original(original, result, (3, 3, 16, 16), seed=4, atol=1e-6)


def test_a_constant_concatenated_with_the_features_follows_the_batch():
    """``torch.cat((x, torch.zeros_like(x)), dim=1)`` traced at batch 1 leaves a constant of
    batch 1 in the Concat, which pinned the batch (pytorchcv's 1-bit WRN): the constant's row is
    expanded to the fed batch."""
    original = models.padded_shortcut()
    result = make_batch_dynamic(original)
    assert not result.pinned_by, result.pinned_by
    assert result.rewrites == (
        "Concat 'join': constant input [1, 4, 8, 8] -> [batch, 4, 8, 8]",
        "Reshape 'flatten': shape [1, -1] -> [0, -1]",
    )
    _runs_as_the_original(original, result, (3, 3, 8, 8), seed=5, atol=1e-6)


@pytest.mark.parametrize(
    ("batch", "axis", "rows"),
    [
        (1, 0, "zeros"),  # along the batch: the constant is a row of its own
        (2, 1, "different"),  # each row of the constant its own: no one row to expand
    ],
)
def test_a_concatenated_constant_that_cannot_follow_the_batch_pins_it(batch, axis, rows):
    result = make_batch_dynamic(models.padded_shortcut(batch=batch, axis=axis, rows=rows))
    assert not [r for r in result.rewrites if r.startswith("Concat")]
    if axis:  # along axis 0 the Concat's dim 0 is no number to name it by
        assert result.pinned_by.startswith("Concat node 'join'"), result.pinned_by


def test_a_stack_that_moves_the_batch_to_dim_1_does_not_pin_it():
    """``torch.stack(columns).mean(0)`` (pytorchcv's FractalNet) unsqueezes dim 0: its output's
    dim 0 is a number, but the batch is still there, at dim 1. It was named as the node that
    pins the batch, and import stopped there."""
    original = models.stacked_columns()
    result = make_batch_dynamic(original)
    assert not result.pinned_by, result.pinned_by
    assert result.rewrites == ("Reshape 'flatten': shape [1, -1] -> [0, -1]",)
    _runs_as_the_original(original, result, (3, 3, 8, 8), seed=6, atol=1e-6)


def test_a_flatten_to_minus_one_carries_the_batch_to_the_reshape_that_pins_it():
    """jax2onnx at a fixed batch of 1 flattens its squeeze-excitation's mean with ``Reshape(s,
    [-1, 4])`` and reshapes the gate back to ``[1, 4, 1, 1]``. ONNX's shape inference makes the
    -1 a new unknown, so the second Reshape was not seen to read the batch: nothing was
    rewritten, nothing named, and the batch step failed at batch 2."""
    original = models.squeeze_excitation()
    result = make_batch_dynamic(original)
    assert not result.pinned_by, result.pinned_by
    assert result.rewrites == ("Reshape 'se_back': shape [1, 4, 1, 1] -> [0, 4, 1, 1]",)
    _runs_as_the_original(original, result, (3, 3, 8, 8), seed=7, atol=1e-6)
    # [-1, 2] of [batch, 4, 1, 1] is [2 * batch, 2]: its -1 is not the batch, nothing rewritten
    assert make_batch_dynamic(models.squeeze_excitation(width=2)).rewrites == ()


def test_a_batch_that_cannot_be_made_dynamic_names_the_node(files):
    result = make_batch_dynamic(onnx.load(str(files["mixing"])))
    assert "ReduceMean node 'batch_mean'" in result.pinned_by


def test_the_batch_step_check_fails_on_a_model_that_differs(files):
    original = onnx.load(str(files["fixed"]))
    dynamic = make_batch_dynamic(original).model
    other = make_batch_dynamic(models.fixed_batch_reshape(seed=5)).model  # other weights
    assert verify_batch_step(original, dynamic, 1)
    assert not verify_batch_step(original, other, 1)


@pytest.mark.parametrize("op", ["Expand", "Tile"])
def test_a_constant_expanded_or_tiled_to_the_batch_follows_it(op):
    """A constant [1, 4] broadcast to the fixed batch and added to the features: its dim 0
    becomes the batch that is fed."""
    from onnx import TensorProto, helper, numpy_helper

    const = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 4), "c")
    target = numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "t")
    ones = numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "one")
    second = "t" if op == "Expand" else "one"
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "w"], ["z"], name="fc"),
        helper.make_node(op, ["c", second], ["b"], name="broadcast"),
        helper.make_node("Concat", ["z", "b"], ["y"], name="join", axis=1),
    ]
    w = numpy_helper.from_array(np.ones((3, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [const, target, ones, w],
    )
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    original.ir_version = 8
    result = make_batch_dynamic(original)
    assert not result.pinned_by, result.pinned_by
    assert [r.split(":")[0] for r in result.rewrites] == [f"{op} 'broadcast'"]
    assert verify_batch_step(original, result.model, 1)


# --- the reference ---------------------------------------------------------------------------


def test_the_float64_copy_computes_in_float64(files):
    original = onnx.load(str(files["fixed"]))
    double = cast_to_double(original)
    assert double.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert all(i.data_type != onnx.TensorProto.FLOAT for i in double.graph.initializer)
    x = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    ref = make_reference(original, x[:1], fixed=1, choice="float64")
    assert ref.precision == "float64"
    (out64,) = ref.run(x)
    (out32,) = ref.run_f32(x)
    assert out64.dtype == np.float64 and out32.dtype == np.float32
    assert 0 < np.abs(out64 - out32).max() < 1e-4  # float32 rounding, not another model


def test_the_float64_reference_of_an_opset_11_batch_norm_is_each_rows_own(files):
    """onnx's own kernel for BatchNormalization 9-13 blends the batch's statistics into the
    running ones (onnx/onnx#8442): a row's reference depended on the rows beside it and parity
    failed a healthy graph (RapidOCR's text-direction classifier: labels 1 of 7 agreed)."""
    original = onnx.load(str(files["paddle"]))
    x = np.random.default_rng(2).random((5, 3, 16, 24), dtype=np.float32)
    ref = make_reference(original, x[:1], outputs=["z"], choice="float64")
    together = ref.run(x)
    one_by_one = [ref.run(x[i : i + 1]) for i in range(5)]
    alone = [np.concatenate(rows) for rows in zip(*one_by_one, strict=True)]
    for batch, rows, f32 in zip(together, alone, ref.run_f32(x), strict=True):
        np.testing.assert_allclose(batch, rows, rtol=1e-12, atol=1e-14)  # float64 sums only
        np.testing.assert_allclose(batch, f32, atol=1e-5)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [None, 1, -2, 0])
def test_the_float64_reference_coerces_softmax_to_2d_below_opset_13(op, axis):
    """Before opset 13 Softmax, LogSoftmax and Hardmax normalise the input coerced to 2-D at
    ``axis`` (default 1); onnx's kernels (1.23) compute opset 13's, along ``axis`` alone
    (default -1). Caffe2's SqueezeNet (opset 9): every class's probability 1."""
    attributes = {} if axis is None else {"axis": axis}
    node = onnx.helper.make_node(op, ["x"], ["y"], name="norm", **attributes)
    x_info = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 4])
    y_info = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3, 4])
    graph = onnx.helper.make_graph([node], "g", [x_info], [y_info])
    x = np.random.default_rng(4).normal(0, 2, (2, 3, 4)).astype(np.float32)
    for opset in (11, 13):
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        model.ir_version = 8
        (want,) = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        ).run(None, {"x": x})
        (got,) = reference_evaluator(model).run(None, {"x": x})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"opset {opset}")


def test_a_caffe2_style_softmax_head_gets_the_float64_reference(files, tmp_path):
    """Opset 9, a Softmax without ``axis`` on the pooled [1, K, 1, 1]: with onnx's kernel the
    float64 reference gave 1 for every class, 0.8 away from ONNX Runtime's, and import fell
    back to float32."""
    out = tmp_path / "nk11_opset9"
    result = invoke("import", files["nk11_opset9"], "--out", out)
    assert result.exit_code == 0, result.output
    reference = json.loads((out / "manifest.json").read_text())["imported"]["reference"]
    assert reference["precision"] == "float64", reference
    assert invoke("parity", out, "--providers", "cpu").exit_code == 0


@pytest.mark.parametrize("size", [3, 5])
def test_the_float64_reference_of_lrn_sums_over_channels(size):
    """onnx's own LRN kernel (1.23) loops over the batch, not the channels (onnx/onnx#7805):
    with a batch of 1 only channel 0 was normalised, and GoogLeNet's float64 reference was 0.02
    from every engine in probability."""
    node = onnx.helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.02, beta=0.75, bias=1.5)
    x_info = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 7, 4, 4])
    y_info = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 7, 4, 4])
    model = onnx.helper.make_model(
        onnx.helper.make_graph([node], "g", [x_info], [y_info]),
        opset_imports=[onnx.helper.make_opsetid("", 9)],
    )
    model.ir_version = 8
    x = np.random.default_rng(5).normal(0, 3, (3, 7, 4, 4)).astype(np.float32)
    (want,) = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})
    (together,) = reference_evaluator(model).run(None, {"x": x})
    (alone,) = reference_evaluator(model).run(None, {"x": x[1:2]})
    np.testing.assert_allclose(together, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(alone[0], together[1])  # each row its own


def test_a_batch_norm_in_training_mode_has_no_float64_reference():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 2, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 2, 3])
    stats = [
        onnx.numpy_helper.from_array(np.ones(2, dtype=np.float32), n) for n in ("s", "b", "m", "v")
    ]
    node = onnx.helper.make_node(
        "BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "mean", "var"], name="bn"
    )
    graph = onnx.helper.make_graph([node], "g", [x], [y], stats)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 11)])
    with pytest.raises(Exception, match="'bn' is in training mode"):
        reference_evaluator(model).run(None, {"x": np.ones((2, 2, 3), dtype=np.float32)})


def test_an_unnamed_dynamic_batch_takes_the_name_beside_it():
    model = models.softmax_dynamic_width()
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = -1
    named, lines = name_batch_dim(model)
    assert lines == ("'prob': dim 0 -1 -> 'N'",)
    assert named.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert name_batch_dim(named) == (named, ())  # nothing left to name: the same model
    named.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "M"  # as tf2onnx names them
    assert name_batch_dim(named)[1] == ("'prob': dim 0 'M' -> 'N'",)


def test_check_fails_a_batch_written_as_minus_one(files):
    result = invoke("check", files["paddle"])
    assert result.exit_code == 1
    assert "FAILED | batch | input 'x': expected a symbolic dim 0, found -1" in result.output


def test_disagreement_is_beyond_float32_rounding_only():
    truth = np.random.default_rng(3).normal(0, 2, (7, 4))
    kinds = ("zeros", "ones", "grey", "gradient-h", "gradient-v", "random", "random")
    rounded = truth.astype(np.float32)
    assert disagreement([("logits", truth, rounded, rounded)], kinds) == ""
    moved = rounded.copy()
    moved[5, 2] += 0.05 * np.sqrt(np.mean(truth**2))  # 5% of the RMS, in one element
    found = disagreement([("logits", truth, moved, moved)], kinds)
    assert "logits" in found and "row 5 (random)" in found and "disagree" in found
    # Where float32's own spread on the model is as large, it is rounding, not another model.
    spread = moved + np.float32(0.01) * np.sqrt(np.mean(truth**2))
    assert disagreement([("logits", truth, moved, spread)], kinds) == ""
    moved[5, 2] = np.nan
    assert "row 5 (random)" in disagreement([("logits", truth, moved, rounded)], kinds)


@pytest.fixture
def onnx_batch_norm(monkeypatch):
    """The float64 reference through onnx's own kernels, BatchNormalization 9-13 as onnx 1.23
    computes it (the batch's statistics blended in): a reference that is not the file's."""
    from onnx.reference import ReferenceEvaluator

    from onnxedge.export import onnx_reference

    monkeypatch.setattr(onnx_reference, "reference_evaluator", ReferenceEvaluator)


def test_a_reference_that_disagrees_with_onnxruntime_is_not_taken(files, tmp_path, onnx_batch_norm):
    out = tmp_path / "paddle"
    result = invoke("import", files["paddle"], "--input-shape", "3,16,24", "--out", out)
    assert result.exit_code == 0, result.output
    reference = json.loads((out / "manifest.json").read_text())["imported"]["reference"]
    assert reference["precision"] == "float32"
    assert "disagree beyond float32 rounding" in reference["reason"]
    assert "taking ONNX Runtime's" in reference["reason"]
    assert "disagree beyond float32 rounding" in result.output
    assert invoke("parity", out, "--providers", "cpu").exit_code == 0


def test_reference_float64_refuses_a_reference_that_disagrees(files, tmp_path, onnx_batch_norm):
    out = tmp_path / "paddle"
    args = ["--input-shape", "3,16,24", "--reference", "float64", "--out", out]
    result = invoke("import", files["paddle"], *args)
    assert_one_line_error(result, "--reference float64: at batch", "--reference float32")
    assert not out.exists()


def test_auto_takes_float32_where_float64_would_take_too_long(files):
    original = onnx.load(str(files["fixed"]))
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    ref = make_reference(original, x, fixed=1, budget_s=1e-9)
    assert ref.precision == "float32" and "over the" in ref.reason


def test_an_output_of_n_k_1_1_is_flattened_and_verified(files, tmp_path):
    out = tmp_path / "b"
    result = invoke("import", files["nk11"], "--out", out)
    assert result.exit_code == 0, result.output
    assert "verified output flattened to [N, K] at batch 1, 1: max abs error 0" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["output"]["shape"] == ["batch", 5]
    assert manifest["output"]["kind"] == "probabilities"
    assert manifest["imported"]["output_flattened"] is True
    steps = [s["step"] for s in manifest["graph"]["verified_steps"]]
    assert steps[:3] == ["output flattened to [N, K]", "onnxsim", "batch made dynamic"]
    original = onnx.load(str(files["nk11"]))
    batch = load_golden(Bundle.open(out)).batch(2)
    rows = np.concatenate([run(original, batch.inputs[i : i + 1]) for i in range(2)])
    np.testing.assert_array_equal(batch.prob_f32, rows.reshape(2, 5))
    assert invoke("parity", out, "--providers", "cpu").exit_code == 0


def test_the_flatten_check_fails_on_other_numbers(files):
    from onnxedge.export.interface import flatten_output
    from onnxedge.export.verify import verify_output_flatten

    original = onnx.load(str(files["nk11"]))
    assert verify_output_flatten(original, flatten_output(original))
    other = flatten_output(models.conv_classifier_nk11(seed=6))
    assert not verify_output_flatten(original, other)


def test_images_join_the_golden_rows(files, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for level in (30, 220):
        Image.fromarray(np.full((30, 20, 3), level, dtype=np.uint8)).save(images / f"{level}.png")
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "b"
    result = invoke("import", files["gray"], "--out", out, "--images", images)
    assert result.exit_code == 0, result.output
    golden = json.loads((out / "manifest.json").read_text())["golden"]
    assert golden["images"] == ["220.png", "30.png"]
    assert [s.split(":")[0] for s in golden["images_skipped"]] == ["broken.png"]
    kinds = load_golden(Bundle.open(out)).batch(64).kinds
    assert "image:30.png" in kinds and "image:220.png" in kinds
    parity = invoke("parity", out, "--providers", "cpu")
    assert parity.exit_code == 0 and "match bit for bit" in parity.output


def test_reference_float32_is_recorded_in_the_manifest(files, tmp_path):
    out = tmp_path / "b"
    result = invoke("import", files["gray"], "--out", out, "--reference", "float32")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["imported"]["reference"]["precision"] == "float32"
    assert manifest["golden"]["reference_precision"] == "float32"
    parity = invoke("-v", "parity", out, "--providers", "cpu")
    assert parity.exit_code == 0, parity.output
    # The CPU EP's tolerances plus the float32 reference's own (the CPU EP's again), alone.
    assert "prob max_abs" in parity.output and "(atol 2e-05, rtol 0.0002)" in parity.output
    assert "(guard: guard atol 2e-05, rtol 0.0002)" in parity.output


def test_a_float32_reference_widens_the_tolerances_by_the_cpu_eps():
    from onnxedge.runtime.parity import Target
    from onnxedge.runtime.parity.tolerances import ToleranceOverrides

    plain = Target("cuda", "off").tolerances()
    wide = Target("cuda", "off").tolerances(reference="float32")
    assert (wide.prob.atol, wide.prob.rtol) == (plain.prob.atol + 1e-5, plain.prob.rtol + 1e-4)
    # No float64 truth to measure the rounding against: the widened tolerances alone judge.
    assert plain.rounding_factor is not None and wide.rounding_factor is None
    assert "float32 reference" in wide.basis and "float32" not in plain.basis
    # ... but no target is held nearer it than 20x its own spread; tolerances set by hand alone.
    assert wide.spread_least and not plain.spread_least
    hand = Target("cpu").tolerances(ToleranceOverrides(atol=1e-3), reference="float32")
    assert not hand.spread_least and hand.rounding_factor is None


def _shift_golden(bundle: Path, by: float, spread: float | None) -> None:
    """Every logit of ``bundle``'s golden data (a sigmoid probability) moved by ``by``, its
    probability with it, and the float32 spread in its meta set to ``spread`` (None: none)."""
    from test_classifier import rehash

    from onnxedge.runtime.parity import GOLDEN
    from onnxedge.runtime.parity.npz import npz_bytes, read_npz
    from onnxedge.runtime.parity.reference import canonical_json

    arrays = read_npz(bundle / GOLDEN)
    for key in [k for k in arrays if k.startswith("logits_b")]:
        logits = arrays[key].astype(np.float64) + by
        prob = 1 / (1 + np.exp(-logits))
        dtype = arrays[key].dtype
        arrays[key] = logits.astype(dtype)
        arrays["prob" + key.removeprefix("logits")] = prob.astype(dtype)
    meta = json.loads(arrays["meta"].tobytes())
    meta.pop("float32_spread", None)
    if spread is not None:
        meta["float32_spread"] = {"prob": spread, "logits": spread, "runs": ["test"]}
    arrays["meta"] = np.frombuffer(canonical_json(meta), np.uint8)
    (bundle / GOLDEN).write_bytes(npz_bytes(arrays))
    rehash(bundle, GOLDEN)


def test_a_float32_reference_stores_its_spread_and_parity_holds_no_engine_nearer(files, tmp_path):
    """ONNX Runtime's float32 run as the reference is itself off the truth by about its spread
    (with and without graph optimizations, stored in the golden meta): an engine that differs
    from it by less than 20x that spread passes though over the guard (OpenVINO f32 on
    GoogLeNet at 2.6x the guard was a false alarm), and by more, or with no spread stored,
    fails."""
    import shutil

    out = tmp_path / "b"
    result = invoke("import", files["gray"], "--out", out, "--reference", "float32")
    assert result.exit_code == 0, result.output
    spread = load_golden(Bundle.open(out)).float32_spread
    assert spread is not None and spread["runs"] == ["ONNX Runtime CPU without graph optimizations"]
    assert all(spread[k] >= 0 and np.isfinite(spread[k]) for k in ("prob", "logits"))
    float64 = tmp_path / "f64"
    assert invoke("import", files["gray"], "--out", float64).exit_code == 0
    assert load_golden(Bundle.open(float64)).float32_spread is None  # its rounding measures it
    # The guard is about 2e-4 at a logit of 1; a spread of 1e-3 raises the bound to 2e-2.
    for by, spread_set, passes in (
        (1e-2, 1e-3, True),
        (1e-2, None, False),
        (5e-2, 1e-3, False),
    ):
        shifted = tmp_path / f"shifted-{by}-{spread_set}"
        shutil.copytree(out, shifted)
        _shift_golden(shifted, by, spread_set)
        parity = invoke("parity", shifted, "--providers", "cpu")
        assert (parity.exit_code == 0) is passes, (by, spread_set, parity.output)
        if not passes:
            assert "FAILED" in parity.output
        if spread_set is not None:
            bound = "20x the float32 reference's own spread" if not passes else "spread"
            assert bound in parity.output, parity.output


# --- the bundles -----------------------------------------------------------------------------


def test_the_fixed_batch_bundle_records_each_step(bundles, files):
    manifest = json.loads((bundles["fixed"] / "manifest.json").read_text())
    assert manifest["exporter"] == "import"
    assert manifest["input"]["shape"] == ["batch", 3, 32, 32]
    assert manifest["output"] == {
        "name": "logits",
        "shape": ["batch", 4],
        "dtype": "float32",
        "kind": "logits",
    }
    steps = {s["step"]: s for s in manifest["graph"]["verified_steps"]}
    assert steps["batch made dynamic"]["batches"] == [1, 2, 7]
    assert all(s["passed"] for s in steps.values())
    assert manifest["graph"]["gap_rewrites"] == [
        "AveragePool 'pool' -> GlobalAveragePool (kernel 32x32)"
    ]
    imported = manifest["imported"]
    assert imported["fixed_batch"] == 1 and imported["reference"]["precision"] == "float64"
    assert (
        imported["sha256"] == __import__("hashlib").sha256(files["fixed"].read_bytes()).hexdigest()
    )
    assert manifest["labels"] == {"classes": ["class_0", "class_1", "class_2", "class_3"]}


def test_a_batch_written_as_minus_one_is_named(bundles):
    """PaddlePaddle's converter writes dim 0 as -1; the bundle's runtime takes only names or
    sizes, so import names it (the bundle was refused by every command before)."""
    manifest = json.loads((bundles["paddle"] / "manifest.json").read_text())
    assert manifest["input"]["shape"] == ["batch", 3, "?", "?"]
    assert manifest["output"]["shape"] == ["batch", 2]
    assert manifest["imported"]["batch_rewrites"] == [
        "'x': dim 0 -1 -> 'batch'",
        "'prob': dim 0 -1 -> 'batch'",
    ]
    assert manifest["imported"]["reference"]["precision"] == "float64"
    classifier = Classifier.from_bundle(bundles["paddle"], provider="cpu")
    predictions = classifier.predict_array(np.zeros((3, 3, 16, 24), dtype=np.float32))
    assert [p.label for p in predictions] == [predictions[0].label] * 3
    assert predictions[0].label in ("class_0", "class_1")


def test_a_crop_fraction_is_recorded_and_reproduced_by_parity(files, tmp_path):
    out = tmp_path / "cropped"
    args = ["--crop-fraction", "0.875", "--no-golden-layers"]  # implies --crop center-square
    result = invoke("import", files["fixed"], *args, "--out", out)
    assert result.exit_code == 0, result.output
    spec = json.loads((out / "manifest.json").read_text())["preprocessing"]
    assert (spec["crop"], spec["crop_fraction"]) == ("center-square", 0.875)
    parity = invoke("parity", out, "--providers", "cpu")
    assert parity.exit_code == 0, parity.output
    assert "PASSED | preprocessing" in parity.output
    refused = invoke("import", files["fixed"], "--crop", "none", *args, "--out", tmp_path / "x")
    assert_one_line_error(refused, "crop_fraction: expected crop center-square", "'none'")
    bad = invoke("import", files["fixed"], "--crop-fraction", "1.5", "--out", tmp_path / "y")
    assert bad.exit_code == 2 and "--crop-fraction" in bad.output


@pytest.mark.parametrize("name", ["keras", "keras_nhwc_head"])
def test_a_channels_last_input_is_made_channels_first(bundles, files, name):
    """tf2onnx's Keras classifiers take NHWC; the bundle takes NCHW as every bundle does, the
    file's Transpose cancelled, the head's mean (NCHW or NHWC) lowered, each step verified."""
    manifest = json.loads((bundles[name] / "manifest.json").read_text())
    assert manifest["input"]["shape"] == ["unk__0", 3, 20, 20]
    assert manifest["imported"]["input_layout"] == "NHWC"
    assert manifest["output"]["shape"] == ["unk__0", 3]
    assert manifest["imported"]["batch_rewrites"] == ["'prob': dim 0 'unk__1' -> 'unk__0'"]
    steps = {s["step"]: s for s in manifest["graph"]["verified_steps"]}
    assert steps["input made NCHW"]["passed"] and steps["input made NCHW"]["max_abs_error"] == 0
    assert manifest["graph"]["gap_rewrites"][0].startswith("ReduceMean 'gap' -> GlobalAveragePool")
    assert "Transpose" not in manifest["graph"]["nodes"]
    # predict's probabilities are the original file's on the same pixels, channels-last
    x = np.random.default_rng(4).random((3, 3, 20, 20), dtype=np.float32)
    expected = run(onnx.load(str(files[name])), x.transpose(0, 2, 3, 1))
    classifier = Classifier.from_bundle(bundles[name], provider="cpu")
    np.testing.assert_allclose(classifier.probabilities(x), expected, rtol=1e-5, atol=1e-6)


def test_a_keras_model_converted_by_tf2onnx_is_imported_and_passes_parity(tmp_path):
    """A file tf2onnx itself wrote (tests/foreign/README.md): NHWC, its output's batch named
    apart from its input's. Both refused it before (32 channels; two batch names)."""
    out = tmp_path / "keras"
    src = Path(__file__).parent / "foreign" / "keras_small_tf2onnx.onnx"
    result = invoke("import", src, "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--out", out)
    assert result.exit_code == 0, result.output
    assert "batch: rewrote 'output_0': dim 0 'unk__17' -> 'unk__16'" in result.output
    assert "verified input made NCHW at batch 1, 2: max abs error 0" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["shape"] == ["unk__16", 3, 32, 32]
    assert manifest["imported"]["input_layout"] == "NHWC"
    assert manifest["imported"]["reference"]["precision"] == "float64"
    assert "Transpose" not in manifest["graph"]["nodes"]
    parity = invoke("parity", out, "--providers", "cpu")
    assert parity.exit_code == 0, parity.output
    assert "labels 64/64 agree" in parity.output


def test_a_jax_model_converted_by_jax2onnx_is_imported_and_passes_parity(tmp_path):
    """A file jax2onnx wrote (tests/foreign/README.md): NHWC, every Conv inside a Transpose pair,
    a residual block added and its ReLU taken in NHWC before the mean over axes 1 and 2, and
    a shape annotation its layout pass left stale. Import refused it before: onnx.checker
    failed on the annotations, then the NHWC mean was not lowered."""
    out = tmp_path / "jax"
    src = Path(__file__).parent / "foreign" / "jax_resnet_jax2onnx.onnx"
    result = invoke("import", src, "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--out", out)
    assert result.exit_code == 0, result.output
    assert (
        "annotations: dropped 1 shape annotation(s) (value_info) the graph contradicts: "
        "'relu_out_1' float ['B', 32, 32, 8], computed float ['B', 8, 32, 32]"
    ) in result.output
    assert (
        "rewrote ReduceMean 'ReduceMean_0' -> GlobalAveragePool (channels-last by elementwise "
        "ops, +Transpose to NCHW, keepdims=0, +Flatten)"
    ) in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["imported"]["annotations_dropped"]) == 1
    assert manifest["imported"]["input_layout"] == "NHWC"
    assert "ReduceMean" not in manifest["graph"]["nodes"]
    assert manifest["check"]["passed"]
    parity = invoke("parity", out, "--providers", "cpu")
    assert parity.exit_code == 0, parity.output
    # predict's probabilities are the original file's on the same pixels, channels-last
    x = np.random.default_rng(5).random((3, 3, 32, 32), dtype=np.float32)
    expected = run(onnx.load(str(src)), x.transpose(0, 2, 3, 1))
    classifier = Classifier.from_bundle(out, provider="cpu")
    np.testing.assert_allclose(classifier.probabilities(x), expected, rtol=1e-5, atol=1e-6)


def test_a_flax_linen_model_whose_mean_is_a_sum_and_a_division_is_imported(tmp_path):
    """Flax Linen's ``x.mean(axis=(1, 2))`` reaches jax2onnx as ``ReduceSum`` over NHWC's H and
    W, then ``Div`` by their 576 cells (tests/foreign/README.md). Import refused it: check
    found a ReduceSum pooling into the classifier."""
    out = tmp_path / "linen"
    src = Path(__file__).parent / "foreign" / "flax_linen_jax2onnx.onnx"
    result = invoke("import", src, "--out", out)
    assert result.exit_code == 0, result.output
    assert (
        "rewrote ReduceSum 'node_ReduceSum_35' -> GlobalAveragePool (/ 576 after it, "
        "channels-last, +Transpose to NCHW, keepdims=0, +Flatten)"
    ) in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["output"]["kind"] == "sigmoid-probability"
    assert "ReduceSum" not in manifest["graph"]["nodes"]  # its GroupNorm divides: Div stays
    assert "GlobalAveragePool" in manifest["graph"]["nodes"]
    parity = invoke("parity", out, "--providers", "cpu")
    assert parity.exit_code == 0, parity.output


def test_an_int8_tflite_model_converted_by_tf2onnx_is_imported_and_passes_parity(tmp_path):
    """A Keras model quantized to int8 by the TFLite converter, then converted by tf2onnx
    (tests/foreign/README.md): every tensor in a QuantizeLinear/DequantizeLinear pair, the head's
    mean reads one. Import refused it: the mean was not seen to be channels-last through the
    pair; then the lowering's check failed by one quantization step (ONNX Runtime's extended
    optimizations fuse the new GlobalAveragePool into an int8 QLinearGlobalAveragePool, which
    the ReduceMean never was); and its quantized Softmax output was taken for logits."""
    out = tmp_path / "tflite"
    src = Path(__file__).parent / "foreign" / "keras_int8_tflite_tf2onnx.onnx"
    result = invoke("import", src, "--out", out)
    assert result.exit_code == 0, result.output
    assert "-> GlobalAveragePool (channels-last by elementwise ops" in result.output
    assert "verified GAP lowering at batch 1, 5: max abs error 0\n" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["output"]["kind"] == "probabilities"
    parity = invoke("parity", out, "--providers", "cpu")
    assert parity.exit_code == 0, parity.output
    x = np.random.default_rng(6).random((3, 3, 32, 32), dtype=np.float32)
    expected = run(onnx.load(str(src)), x.transpose(0, 2, 3, 1))  # the file's own int8 rounding
    classifier = Classifier.from_bundle(out, provider="cpu")
    np.testing.assert_allclose(classifier.probabilities(x), expected, rtol=0, atol=1 / 256)


def test_only_the_annotations_the_graph_contradicts_are_dropped(files):
    model = onnx.load(str(files["gray"]))
    inferred = onnx.shape_inference.infer_shapes(model)
    assert inferred.graph.value_info  # every intermediate annotated, correctly
    same, dropped = drop_contradicted_annotations(inferred)
    assert same is inferred and dropped == ()
    stale = onnx.ModelProto()
    stale.CopyFrom(inferred)
    first, second = stale.graph.value_info[0], stale.graph.value_info[1]
    first.type.tensor_type.shape.dim[1].dim_value += 1  # a fixed dim that cannot hold
    del second.type.tensor_type.shape.dim[-1]  # a rank that cannot hold
    third = stale.graph.value_info[2]
    third.type.tensor_type.shape.dim[0].dim_param = "other"  # a name: it may hold
    cleaned, dropped = drop_contradicted_annotations(stale)
    assert [line.split(" ", 1)[0] for line in dropped] == [repr(first.name), repr(second.name)]
    assert {v.name for v in cleaned.graph.value_info} == {
        v.name for v in inferred.graph.value_info
    } - {first.name, second.name}
    onnx.checker.check_model(cleaned, full_check=True)
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.checker.check_model(stale, full_check=True)


def test_one_output_of_several_is_kept(files, tmp_path):
    refused = invoke("import", files["two_heads"], "--out", tmp_path / "refused")
    assert_one_line_error(refused, "found 3 outputs", "'peak' [2, 4]", "--output-name NAME")
    unknown = invoke(
        "import", files["two_heads"], "--output-name", "probs", "--out", tmp_path / "u"
    )
    assert_one_line_error(unknown, "--output-name 'probs': expected one of the file's outputs")
    out = tmp_path / "kept"
    result = invoke("import", files["two_heads"], "--output-name", "prob", "--out", out)
    assert result.exit_code == 0, result.output
    assert "verified outputs other than 'prob' dropped at batch 1, 2: max abs error 0" in (
        result.output
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["output"]["name"] == "prob" and manifest["output"]["kind"] == "probabilities"
    assert manifest["imported"]["outputs_dropped"] == ["logits", "peak"]
    assert "ReduceMax" not in manifest["graph"]["nodes"]  # what only 'peak' needed is gone
    assert invoke("parity", out, "--providers", "cpu").exit_code == 0


def test_the_kept_output_step_check_fails_on_a_model_that_differs():
    several = models.logits_and_probabilities()
    other = kept_output(models.logits_and_probabilities(seed=9), "prob")
    assert not verify_kept_output(several, other, "prob", (16, 16))
    assert verify_kept_output(several, kept_output(several, "prob"), "prob", (16, 16))


def test_the_layout_is_told_by_where_the_channels_are():
    assert input_layout(["N", 224, 224, 3]) == "NHWC"
    assert input_layout([1, 28, 28, 1]) == "NHWC"
    assert input_layout(["N", 3, 224, 224]) == "NCHW"
    assert input_layout(["N", 3, 8, 3]) == "NCHW"  # both could be channels: NCHW, as ONNX's
    assert input_layout(["N", "H", "W", "C"]) == "NCHW"  # nothing says: ONNX's own
    assert input_layout(["N", 3, 8, 3], "NHWC") == "NHWC"
    with pytest.raises(OnnxEdgeError, match="--input-layout: expected one of auto, NCHW, NHWC"):
        input_layout(["N", 3, 8, 8], "CHW")


def test_the_layout_step_check_fails_on_a_model_that_differs(files):
    other = models.channels_last(seed=8)
    step = verify_input_layout(other, nchw_input(models.channels_last()), (20, 20))
    assert not step and step.max_abs_error > 0


def test_an_nhwc_file_read_as_nchw_is_refused_in_one_line(files, tmp_path):
    result = invoke("import", files["keras"], "--input-layout", "NCHW", "--out", tmp_path / "k")
    assert_one_line_error(result, "expected an image input with 1 (grayscale) or 3 channels")
    assert not (tmp_path / "k").exists()


def test_scale_is_given_for_a_model_that_takes_0_to_255(files, tmp_path):
    """Keras's applications rescale inside and take 0..255: ``--scale 1`` hands the pixels over
    as they are (mean 0 and std 1 after it), recorded and reproduced by parity."""
    out = tmp_path / "raw"
    args = ["--scale", "1", "--mean", "0,0,0", "--std", "1,1,1", "--no-golden-layers"]
    result = invoke("import", files["fixed"], *args, "--out", out)
    assert result.exit_code == 0, result.output
    spec = json.loads((out / "manifest.json").read_text())["preprocessing"]
    assert spec["scale"] == 1.0
    assert invoke("parity", out, "--providers", "cpu").exit_code == 0
    image = Image.new("RGB", (32, 32), (255, 128, 0))
    pixels = Classifier.from_bundle(out, provider="cpu").preprocess(image)
    np.testing.assert_array_equal(pixels[:, 0, 0], [255.0, 128.0, 0.0])
    zero = invoke("import", files["fixed"], "--scale", "0", "--out", tmp_path / "zero")
    assert zero.exit_code == 2 and "--scale" in zero.output


def test_golden_data_is_the_original_files(bundles, files):
    """The golden probabilities are the original file's, row by row at its fixed batch."""
    bundle = Bundle.open(bundles["fixed"])
    reference = load_golden(bundle)
    original = onnx.load(str(files["fixed"]))
    batch = reference.batch(7)
    rows = np.concatenate([run(original, batch.inputs[i : i + 1]) for i in range(7)])
    np.testing.assert_array_equal(batch.logits_f32, rows)
    np.testing.assert_allclose(batch.logits, rows, atol=1e-5)


@pytest.mark.parametrize("name", ["fixed", "ocr", "gray", "paddle", "keras", "keras_nhwc_head"])
def test_parity_passes_on_each_imported_bundle(bundles, name):
    result = invoke("parity", bundles[name], "--providers", "cpu")
    assert result.exit_code == 0, result.output
    assert "PASSED | preprocessing" in result.output
    assert "match bit for bit" in result.output


def test_localize_names_the_onnx_nodes_of_an_imported_bundle(bundles):
    manifest = json.loads((bundles["fixed"] / "manifest.json").read_text())
    assert manifest["layers"]["modules"] == {}
    assert manifest["layers"]["golden"]["file"] == "golden_layers.npz"
    result = invoke(
        "parity",
        bundles["fixed"],
        "--providers",
        "cpu",
        "--batch-sizes",
        "7",
        "--localize",
        "always",
    )
    assert result.exit_code == 0, result.output
    table = {
        line.split()[1]: line.split()
        for line in result.output.splitlines()
        if "passed" in line and line.lstrip()[:1].isdigit()
    }
    assert {"conv", "relu", "pool", "flatten", "fc"} <= set(table), result.output
    assert table["conv"][2] == "Conv" and table["conv"][3] == "-"  # no PyTorch module


def test_pad_right_preprocessing_pads_the_golden_rows(bundles):
    manifest = json.loads((bundles["ocr"] / "manifest.json").read_text())
    spec = manifest["preprocessing"]
    assert spec["resize_mode"] == "pad-right" and spec["resize"] == [48, 96]
    assert manifest["input"]["shape"] == ["N", 3, 48, "W"]
    assert manifest["output"]["kind"] == "probabilities"
    inputs, kinds = golden_inputs(7, spec)
    ones = inputs[kinds.index("ones")]
    # The structured images are 89 x 109: at height 48, ceil(48 * 89 / 109) = 40 columns.
    np.testing.assert_array_equal(ones[:, :, :40], 1.0)
    np.testing.assert_array_equal(ones[:, :, 40:], 0.0)


def test_grayscale_bundle_predicts_from_files(bundles, tmp_path):
    manifest = json.loads((bundles["gray"] / "manifest.json").read_text())
    assert manifest["preprocessing"]["color"] == "L"
    assert manifest["preprocessing"]["mean"] == [0.0]
    assert manifest["input"]["shape"] == ["N", 1, 28, 28]
    path = tmp_path / "a.png"
    Image.fromarray(np.full((40, 30, 3), 200, dtype=np.uint8)).save(path)
    (result,) = Classifier.from_bundle(bundles["gray"], provider="cpu").predict_files([path])
    assert result.prediction is not None
    expected = run(
        onnx.load(str(bundles["gray"] / "model.onnx")),
        np.full((1, 1, 28, 28), 200 / 255, dtype=np.float32),
    )
    assert result.prediction.probability == pytest.approx(float(expected[0, 0]), abs=1e-6)


@pytest.mark.parametrize("name", ["fixed", "ocr"])
def test_bench_says_there_are_no_pytorch_peers(bundles, name):
    """The OCR model's W is symbolic: bench feeds the preprocessing's 48 x 96."""
    result = invoke(
        "bench",
        bundles[name],
        "--providers",
        "cpu",
        "--engines",
        "onnxruntime",
        "--batch-sizes",
        "1",
        "--iters",
        "2",
        "--rounds",
        "1",
        "--warmup",
        "0",
    )
    assert result.exit_code == 0, result.output
    lines = [
        line for line in unwrap_markdown(result.output).splitlines() if "PyTorch peers" in line
    ]
    assert lines == [
        f"- no PyTorch peers: the bundle was imported from ONNX ({name}.onnx), so there is no "
        "PyTorch model to time beside ONNX Runtime"
    ]
    assert "| 1 | onnxruntime | cpu | end-to-end |" in result.output


def _class_folders(root: Path, classes: dict[str, list[int]]) -> Path:
    """Split folders train and test of class folders, each image a flat grey of the given
    levels (as 40 x 150 text lines)."""
    for split in ("train", "test"):
        for name, levels in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for level in levels:
                pixels = np.full((40, 150, 3), level, dtype=np.uint8)
                pixels[:, ::7] = 255 - level  # stripes, so that the classes differ
                Image.fromarray(pixels).save(folder / f"{level}.png")
    return root


def test_evaluate_a_k_class_bundle_on_class_folders(bundles, tmp_path):
    data = _class_folders(tmp_path / "data", {"class_0": [0, 40], "class_2": [90, 200, 250]})
    out = tmp_path / "eval.json"
    result = invoke("evaluate", bundles["ocr"], "--data", data, "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    matrix = np.asarray(report["confusion"]["matrix"])
    assert report["confusion"]["classes"] == ["class_0", "class_1", "class_2"]
    assert matrix.sum() == report["evaluated"] == 5 and report["images"] == {
        "class_0": 2,
        "class_2": 3,
    }
    # The same top classes as predict's, image by image.
    classifier = Classifier.from_bundle(bundles["ocr"], provider="cpu")
    files = sorted((data / "test").glob("*/*.png"))
    results = classifier.predict_files(files)
    hits = sum(f.parent.name == r.prediction.label for f, r in zip(files, results, strict=True))
    assert report["accuracy"] == pytest.approx(hits / 5)
    assert f"accuracy   {100 * hits / 5:.2f}%" in result.output


def test_a_class_folder_the_model_does_not_know_is_refused(bundles, tmp_path):
    data = _class_folders(tmp_path / "data", {"class_0": [0], "cat": [90]})
    result = invoke("evaluate", bundles["ocr"], "--data", data)
    assert_one_line_error(result, "class folder 'cat' is not one of the model's 3 classes")


def test_optimize_int8_gated_on_class_folders(bundles, tmp_path):
    data = _class_folders(
        tmp_path / "data", {"class_0": [0, 30], "class_1": [120], "class_2": [220]}
    )
    out = tmp_path / "optimized"
    result = invoke("optimize", bundles["ocr"], "--data", data, "--int8", "--out", out)
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "| int8 |" in x]
    assert line.startswith("PASSED | int8 | agreement 100.00% (0/4)"), line
    assert "int8" in json.loads((out / "manifest.json").read_text())["variants"]
    assert invoke("evaluate", out, "--data", data, "--variant", "int8").exit_code == 0


def test_the_fast_decode_of_a_k_class_bundle_is_gated_by_its_top_class(bundles, tmp_path):
    """A K-class bundle has class names, not a threshold: the decode's gate judges top classes
    as the variants' gates do (it was refused: "a logits model has class names, not a
    threshold")."""
    data = _class_folders(tmp_path / "data", {"class_0": [0, 30], "class_2": [220]})
    for split in ("train", "test"):  # JPEGs too, which the fast decode reads its own way
        for level in (60, 180):
            name = data / split / "class_1" / f"{level}.jpg"
            name.parent.mkdir(exist_ok=True)
            Image.fromarray(np.full((80, 300, 3), level, dtype=np.uint8)).save(name)
    out = tmp_path / "optimized"
    result = invoke("optimize", bundles["ocr"], "--data", data, "--fast-decode", "--out", out)
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "| decode-fast |" in x]
    assert line.startswith("PASSED | decode-fast | agreement 100.00% (0/5)"), line
    assert "fast" in json.loads((out / "manifest.json").read_text())["decodes"]


def test_int8_of_an_opset_11_model_is_made_at_opset_13(bundles, tmp_path):
    """PaddlePaddle's converter writes opset 11, whose DequantizeLinear has no axis for
    per-channel weights: the int8 model failed `onnx.checker` (RapidOCR's). It is now converted
    to opset 13 first, checked, and recorded."""
    data = _class_folders(tmp_path / "data", {"class_0": [0, 30], "class_1": [200, 240]})
    out = tmp_path / "optimized"
    args = ["--data", data, "--int8", "--no-gate", "--out", out]
    result = invoke("optimize", bundles["paddle"], *args)
    assert result.exit_code == 0, result.output
    int8 = json.loads((out / "manifest.json").read_text())["variants"]["int8"]
    assert int8["made"]["opset_upgraded_from"] == 11
    model = onnx.load(str(out / int8["file"]))
    assert {o.domain: o.version for o in model.opset_import}[""] >= 13
    assert invoke("evaluate", out, "--data", data, "--variant", "int8").exit_code == 0


def test_the_opset_upgrade_for_int8_is_checked(monkeypatch):
    from onnx import version_converter

    from onnxedge.runtime.variants import quantize

    model = models.paddle_style()
    images = np.random.default_rng(5).random((2, 3, 16, 24), dtype=np.float32)
    assert default_opset(quantize._upgraded(model, images, "x")) == 13

    real = version_converter.convert_version  # a converter that moved a weight on the way
    monkeypatch.setattr(
        version_converter, "convert_version", lambda m, opset: _bias_moved(real(m, opset))
    )
    with pytest.raises(OnnxEdgeError, match=r"converted from opset 11 to 13 .* computes otherwise"):
        quantize._upgraded(model, images, "x")

    def fails(m, opset):
        raise RuntimeError("no adapter for Mystery")

    monkeypatch.setattr(version_converter, "convert_version", fails)
    with pytest.raises(OnnxEdgeError, match="cannot convert it: no adapter for Mystery"):
        quantize._upgraded(model, images, "x")


def _bias_moved(model: onnx.ModelProto) -> onnx.ModelProto:
    bias = next(i for i in model.graph.initializer if i.name == "fc_b")
    moved = onnx.numpy_helper.to_array(bias).copy()
    moved[0] += 1  # one class's (the same on every class would leave the softmax as it was)
    bias.CopyFrom(onnx.numpy_helper.from_array(moved.astype(np.float32), "fc_b"))
    return model


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "fragments"),
    [
        ("two_inputs", [], ["expected one image input", "found 2 inputs", "'a'", "'b'"]),
        ("tokens", [], ["expected a float32 image input", "'ids' int64"]),
        ("segmenter", [], ["expected the output as [N, K]", "[2, 5, 16, 16]", "segmenter"]),
        ("detector", [], ["expected one output [N, K]", "found 2 outputs", "'boxes'"]),
        ("unknown_op", [], ["onnxruntime cannot load", "Mystery"]),
        ("mixing", [], ["cannot be made dynamic", "ReduceMean node 'batch_mean'"]),
        ("ocr", [], ["the input's W is symbolic", "--input-shape"]),
        ("ocr", ["--input-shape", "3,48,192", "--output-kind", "logits"], ["contradicts"]),
        ("gray", ["--output-kind", "probabilities"], ["contradicts", "Sigmoid"]),
        ("fixed", ["--output-kind", "sigmoid"], ["contradicts", "no Softmax or Sigmoid"]),
        ("fixed", ["--input-shape", "3,64,64"], ["the model fixes H at 32"]),
        ("fixed", ["--mean", "0.5"], ["mean: expected three numbers"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(files, tmp_path, name, args, fragments):
    out = tmp_path / "out"
    result = invoke("import", files[name], "--out", out, *args)
    assert_one_line_error(result, *fragments)
    assert not out.exists()


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("not a model at all\n" * 10)
    result = invoke("import", bad, "--out", tmp_path / "out")
    assert_one_line_error(result, "is not an ONNX model")
    assert not (tmp_path / "out").exists()


def test_external_data_outside_the_models_folder_is_refused(files, tmp_path):
    model = onnx.load(str(files["fixed"]))
    inside = tmp_path / "model"
    inside.mkdir()
    onnx.save(
        model,
        str(inside / "m.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    (tmp_path / "weights.bin").write_bytes((inside / "weights.bin").read_bytes())
    climbing = onnx.load(str(inside / "m.onnx"), load_external_data=False)
    for tensor in climbing.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save(climbing, str(inside / "climbing.onnx"))
    result = invoke("import", inside / "climbing.onnx", "--out", tmp_path / "out")
    assert_one_line_error(result, "'../weights.bin'", "expected a file inside the model's folder")
    assert not (tmp_path / "out").exists()
    # The same file with its data beside it imports.
    assert invoke("import", inside / "m.onnx", "--out", tmp_path / "ok").exit_code == 0


# --- the resize modes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "size", "box"),
    [
        ("stretch", (100, 50), ((64, 64), (0, 0))),
        ("pad-right", (100, 50), ((64, 64), (0, 0))),  # ceil(64 * 100 / 50) = 128, at most 64
        ("pad-right", (30, 50), ((39, 64), (0, 0))),  # ceil(64 * 30 / 50) = ceil(38.4)
        ("letterbox", (100, 50), ((64, 32), (0, 16))),  # the width limits
        ("letterbox", (50, 99), ((32, 64), (16, 0))),  # 64 * 50 / 99 = 32.3 -> 32
        ("letterbox", (3, 97), ((2, 64), (31, 0))),  # 64 * 3 / 97 = 1.98 -> 2, offset 31
    ],
)
def test_the_resize_modes_place_the_image(mode, size, box):
    from onnxedge.runtime.classifier.preprocess import resized_box

    assert resized_box(size, (64, 64), {"resize_mode": mode}) == box


def test_letterbox_pads_with_the_pad_value():
    from onnxedge.models.registry import image_preprocessing
    from onnxedge.runtime.classifier.preprocess import preprocess_image

    spec = image_preprocessing(64, 64, resize_mode="letterbox", pad_value=-1.0)
    white = Image.fromarray(np.full((50, 100, 3), 255, dtype=np.uint8))
    array = preprocess_image(white, spec)
    assert array.shape == (3, 64, 64)
    np.testing.assert_array_equal(array[:, :16], -1.0)
    np.testing.assert_array_equal(array[:, 16:48], 1.0)
    np.testing.assert_array_equal(array[:, 48:], -1.0)
    stretched = preprocess_image(white, image_preprocessing(64, 64))
    np.testing.assert_array_equal(stretched, 1.0)  # the default mode pads nothing


def test_grayscale_is_pils_luma_of_the_rgb_image():
    from onnxedge.models.registry import image_preprocessing
    from onnxedge.runtime.classifier.preprocess import preprocess_image

    spec = image_preprocessing(4, 4, color="L", mean=[0.5], std=[0.25])
    red = Image.fromarray(np.full((4, 4, 3), [200, 0, 0], dtype=np.uint8))
    array = preprocess_image(red, spec)
    luma = np.float32(np.asarray(red.convert("L"))[0, 0])  # 200 * 299 / 1000 = 59.8 -> 60
    assert array.shape == (1, 4, 4) and luma == 60
    np.testing.assert_array_equal(
        array, (luma * np.float32(1 / 255) - np.float32(0.5)) / np.float32(0.25)
    )


def test_a_graph_onnxruntime_optimized_names_its_foreign_ops_when_its_batch_stays(tmp_path):
    """A fixed batch behind com.microsoft FusedConv (a graph ONNX Runtime saved after its
    optimizations): shape inference cannot reach the Reshape to [1, -1], and the refusal said
    only "rewrote 0 node(s) ... max abs error inf", naming nothing."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    shape = onnx.numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    fc = onnx.numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "fc")
    nodes = [  # the classifier a 1x1 Conv after the pool, flattened to [1, -1]
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Conv", ["p", "fc"], ["k"]),
        helper.make_node("Reshape", ["k", "shape"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])], [w, shape, fc],
    )  # fmt: skip
    plain = tmp_path / "plain.onnx"
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(made, plain)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert any(n.domain == "com.microsoft" for n in optimized.graph.node)
    result = invoke("import", tmp_path / "optimized.onnx", "--out", tmp_path / "b")
    assert_one_line_error(result, "the input's batch is fixed at 1")
    assert "ops outside the ONNX standard (com.microsoft FusedConv)" in result.output
    assert invoke("import", plain, "--out", tmp_path / "c").exit_code == 0  # the graph as made
