"""The layer check of parity's verdict (runtime/parity/layer_check.py): a row fails where an
intermediate tensor of model.onnx leaves its layer bound against the golden layers, though its
outputs pass; the healthy default bundle passes it; a bundle without golden layers says so in one
line and is judged on its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_assertions import assert_one_line_error, unwrap
from click.testing import CliRunner
from onnx import numpy_helper

from onnxedge.runtime.bundle.hashing import sha256_file
from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.lines import LINE_WIDTH
from onnxedge.runtime.parity.check import check_parity
from onnxedge.runtime.parity.exposed import ExposedModel
from onnxedge.runtime.parity.rows import FAILED, PASSED

CPU = ("cpu",)


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def rescale_channel(bundle: Path, factor: float = 1.01) -> None:
    """conv1's output channel 0 times ``factor`` and conv2's weights on that channel divided by
    it: ReLU and max pooling commute with a positive factor, so the model computes the same
    outputs (up to rounding) while conv1, relu1 and pool1 are 1% off in that channel."""
    model = onnx.load(str(bundle / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}

    def change(name: str, edit) -> None:
        array = numpy_helper.to_array(inits[name]).copy()
        edit(array)
        inits[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))

    change("conv1.weight", lambda a: a.__setitem__(0, a[0] * factor))
    change("conv1.bias", lambda a: a.__setitem__(0, a[0] * factor))
    change("conv2.weight", lambda a: a.__setitem__((slice(None), 0), a[:, 0] / factor))
    onnx.save(model, str(bundle / "model.onnx"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.onnx"]["sha256"] = sha256_file(bundle / "model.onnx")
    manifest["files"]["model.onnx"].pop("bytes", None)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def without_golden_layers(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["layers"]["golden"] = {"file": None, "reason": "--no-golden-layers was given"}
    manifest["files"].pop("golden_layers.npz")
    (bundle / "golden_layers.npz").unlink()
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_a_layer_off_fails_the_row_whose_outputs_pass(bundle_copy):
    rescale_channel(bundle_copy)
    outputs = check_parity(bundle_copy, providers=CPU, layers=False)
    assert outputs.report and not outputs.layers_checked  # the outputs alone: no alarm
    assert all(r.layers is None for r in outputs.report.rows)
    assert outputs.layers_line == "layers: not checked, --no-layers was given; outputs only"
    result = check_parity(bundle_copy, providers=CPU)
    assert not result.report and result.layers_checked
    for row in result.report.rows:  # every batch size fails: the layers are judged per target
        assert row.status == FAILED and row.prob_check and row.logits_check
        assert row.layers.status == FAILED and row.layers.ratio > 10
        assert row.reason.startswith("layer Conv 'node_conv2d' (module conv1 (Conv2d)) error/b")
        assert f"at batch {row.layers.batch}: error/scale" in row.reason
        short = row.line()
        assert all(len(line) <= LINE_WIDTH for line in short.splitlines()), short
        assert f", {row.layers.part()} |" in short.splitlines()[0]
        assert row.layers.part() == f"layers {row.layers.ratio:.0f}"  # a whole number from 100
        assert "layers: 13 tensors at batch 2, largest error/bound" in row.line(verbose=True)
        figures = json.loads(json.dumps(row.to_dict()))["layers"]
        assert figures["status"] == FAILED and figures["failed"][0]["module"]["module"] == "conv1"
        assert figures["failed"][0]["scaled_error"] > figures["failed"][0]["tolerance"]
    localized = check_parity(bundle_copy, providers=CPU, batch_sizes=(2,), localize="failed")
    (found,) = localized.localizations  # the localizing run judges the layers as the row did
    assert found.reproduced is True and found.first_divergent.module.name == "conv1"
    cli = invoke("parity", bundle_copy, "--providers", "cpu")
    assert cli.exit_code == 1, cli.output
    assert "layer Conv 'node_conv2d' (module conv1 (Conv2d))" in unwrap(cli.output)
    assert invoke("parity", bundle_copy, "--providers", "cpu", "--no-layers").exit_code == 0


def test_the_healthy_default_bundle_passes_its_layers(smile_bundle, tmp_path):
    result = check_parity(smile_bundle, providers=CPU, batch_sizes=(1, 7))
    assert result.report and result.layers_checked
    assert result.layers_line.startswith("layers: 13 intermediate tensors of golden_layers.npz")
    for row in result.report.rows:
        assert row.status == PASSED and row.layers.status == PASSED
        assert row.layers.batch == 2 and len(row.layers.layers) == 13
        assert 0 < row.layers.ratio < 1
    cli = invoke("parity", smile_bundle, "--providers", "cpu", "--json", tmp_path / "p.json")
    assert cli.exit_code == 0, cli.output
    assert cli.output.splitlines()[1].startswith("layers: 13 intermediate tensors")
    payload = json.loads((tmp_path / "p.json").read_text())
    assert payload["layers"]["checked"] is True
    assert payload["rows"][0]["layers"]["status"] == PASSED


def test_without_golden_layers_one_line_says_so_and_the_outputs_judge(bundle_copy):
    without_golden_layers(bundle_copy)
    result = check_parity(bundle_copy, providers=CPU, batch_sizes=(2,))
    assert result.report and not result.layers_checked
    assert result.layers_line == (
        f"layers: not checked, {bundle_copy} has no golden layers (--no-golden-layers was "
        "given); outputs only"
    )
    assert all(r.layers is None for r in result.report.rows)
    cli = invoke("parity", bundle_copy, "--providers", "cpu", "--batch-sizes", "2")
    assert cli.exit_code == 0, cli.output
    assert sum("layers: not checked" in line for line in cli.output.splitlines()) == 1
    asked = invoke("parity", bundle_copy, "--providers", "cpu", "--layers")
    assert_one_line_error(asked, "--layers:", "has no golden layers", "leave --layers out")


def test_a_variant_keeps_its_own_judge():
    from onnxedge.runtime.parity.check import _golden_layers

    assert _golden_layers(None, "int8", None) == (None, "a variant is judged by its own bounds")
    with pytest.raises(OnnxEdgeError, match="--variant int8 is judged by its own bounds"):
        _golden_layers(None, "int8", True)


def test_an_engine_that_cannot_run_the_exposed_graph_leaves_the_outputs_verdict(
    smile_bundle, monkeypatch
):
    def refuse(self, target):
        raise OnnxEdgeError("the engine refused the exposed graph")

    monkeypatch.setattr(ExposedModel, "session", refuse)
    result = check_parity(smile_bundle, providers=CPU, batch_sizes=(1,))
    (row,) = result.report.rows
    assert row.status == PASSED and row.layers.status == "not run"
    assert ", layers not checked |" in row.line()
    assert "the engine refused the exposed graph" in row.line(verbose=True)


def test_a_bias_the_simplifier_folded_a_constant_into_is_compared_not_left_out():
    """A convolution whose bias carries a folded ``+ 3`` (a hard sigmoid's, as onnxsim folds it):
    its golden layer is the module's output plus 3, so the export keeps it; weights that differ
    (a BatchNormalization folded in) are not taken for a folded bias."""
    import torch

    from onnxedge.export.layers import folded_biases

    conv = torch.nn.Conv2d(2, 3, 1).double()
    weight = conv.weight.detach().numpy().astype(np.float32)
    bias = conv.bias.detach().numpy().astype(np.float32)

    def graph(w, b):
        return onnx.helper.make_model(
            onnx.helper.make_graph(
                [onnx.helper.make_node("Conv", ["x", "w", "b"], ["y"])],
                "g",
                [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])],
                [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
                [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
            )
        )

    (offset,) = folded_biases(graph(weight, bias + 3), conv, {"": "y"}).values()
    assert offset.shape == (1, 3, 1, 1) and np.allclose(offset, 3, atol=1e-6)
    assert folded_biases(graph(weight, bias), conv, {"": "y"}) == {}
    assert folded_biases(graph(weight * 2, bias + 3), conv, {"": "y"}) == {}


def test_a_tensor_is_judged_at_the_scale_the_golden_layers_give_it():
    """A folded ``+ 3`` around values of RMS 0.01: against its own RMS (about 3) an error of 1e-4
    passes a tolerance of 1e-4, at its module's scale (0.01) it is 1e-2 of it and fails."""
    from onnxedge.runtime.errors import BundleError
    from onnxedge.runtime.parity.exposed import ExposedTensor
    from onnxedge.runtime.parity.layer_compare import compare_layer
    from onnxedge.runtime.parity.layers import _positive

    tensor = ExposedTensor("t", "n", "Conv", 1, 1)
    module = np.array([[0.01, -0.01, 0.01, -0.01]])
    expected, actual = module + 3, module + 3 + 1e-4
    own = compare_layer(tensor, actual, expected, tolerance=1e-4)
    assert own.status == PASSED and own.scaled_error < 1e-4
    at_module = compare_layer(tensor, actual, expected, tolerance=1e-4, scale=0.01)
    assert at_module.status == FAILED and at_module.scaled_error == pytest.approx(1e-2)
    assert _positive("f", {"scales": {"t": 0.5}}, "scales", zero=False) == {"t": 0.5}
    assert _positive("f", {}, "scales", zero=False) == {}
    with pytest.raises(BundleError, match="expected positive scales"):
        _positive("f", {"scales": {"t": 0.0}}, "scales", zero=False)


def test_the_layer_bound_widens_to_the_rounding_factor_times_pytorchs_own_error():
    """An ill-conditioned model rounds its layers as loosely as its outputs: the bound is at least
    the factor times PyTorch's own float32 error at the tensor over its scale, never less than
    the tolerance, and the tolerance alone where no factor applies (TF32, bf16)."""
    from onnxedge.runtime.errors import BundleError
    from onnxedge.runtime.parity.layer_compare import layer_bound
    from onnxedge.runtime.parity.layers import _positive

    e = np.array([[1.0, -1.0]])  # RMS 1
    assert layer_bound(1e-4, e) == 1e-4
    assert layer_bound(1e-4, e, float32_error=1e-5, factor=100) == pytest.approx(1e-3)
    assert layer_bound(1e-4, e, float32_error=1e-8, factor=100) == 1e-4
    assert layer_bound(1e-4, e, float32_error=1e-5, factor=None) == 1e-4
    assert layer_bound(1e-4, e, scale=0.1, float32_error=1e-5, factor=100) == pytest.approx(1e-2)
    meta = {"float32_errors": {"t": 0.0, "u": 1e-7}}
    assert _positive("f", meta, "float32_errors", zero=True) == {"t": 0.0, "u": 1e-7}
    with pytest.raises(BundleError, match="expected non-negative float32_errors"):
        _positive("f", {"float32_errors": {"t": -1.0}}, "float32_errors", zero=True)


def test_a_references_tensor_records_give_each_tensor_its_own_bound():
    """`TensorRecords.bound` widens a tensor's bound by what the reference records of that tensor
    alone (its scale, its float32 and in-sequence errors); a reference that records nothing, or
    nothing of the tensor, leaves the tolerance as it is."""
    from types import SimpleNamespace

    from onnxedge.runtime.parity.layer_compare import TensorRecords

    e = np.array([[1.0, -1.0]])  # RMS 1
    golden = SimpleNamespace(
        scales={"s": 0.1}, float32_errors={"t": 1e-5, "s": 1e-5}, sequence_errors={"q": 1e-3}
    )
    records = TensorRecords.of(golden)
    assert records.bound("t", 1e-4, e, 100) == pytest.approx(1e-3)
    assert records.bound("s", 1e-4, e, 100) == pytest.approx(1e-2)  # at its recorded scale
    assert records.bound("q", 1e-4, e, 100) == pytest.approx(4e-3)  # SEQUENCE_FACTOR x 1e-3
    assert records.bound("u", 1e-4, e, 100) == 1e-4  # nothing recorded of it
    assert records.bound("t", 1e-4, e, None) == 1e-4  # no rounding factor (TF32, bf16)
    assert TensorRecords.of(object()).bound("t", 1e-4, e, 100) == 1e-4


def test_the_golden_layers_record_pytorchs_own_float32_error(smile_bundle):
    from onnxedge.runtime.bundle.reader import Bundle
    from onnxedge.runtime.parity.layers import load_golden_layers

    layers = load_golden_layers(Bundle.open(smile_bundle))
    assert set(layers.float32_errors) == set(layers.tensors)
    assert all(0 <= e < 1e-4 for e in layers.float32_errors.values())
    assert any(e > 0 for e in layers.float32_errors.values())
