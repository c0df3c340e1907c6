"""Layer localisation (`onnxedge.runtime.parity.localize`): tiny graphs for the pieces, then the
smile bundle: a convolution weight scaled by 1% is found at that convolution, by node and module,
for each of the four; an untouched bundle localizes nothing; golden layers, another provider or
another model as the reference; what happens without golden layers, and without torch."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from cli_assertions import unwrap
from onnx import numpy_helper
from torchless import run_without_torch

from onnxedge.runtime.bundle.hashing import sha256_file
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.errors import BundleError
from onnxedge.runtime.parity import load_golden, run_parity
from onnxedge.runtime.parity.exposed import ExposedModel, ExposedTensor, expose_intermediates
from onnxedge.runtime.parity.layer_compare import (
    CREST,
    MIN_DEPTH_SHARE,
    NO_REFERENCE,
    compare_layer,
    layer_tolerance,
)
from onnxedge.runtime.parity.layer_reference import (
    against_provider,
    against_variant,
    golden_layer_reference,
    run_layer_reference,
)
from onnxedge.runtime.parity.layers import GOLDEN_LAYERS, NoGoldenLayers, layer_modules
from onnxedge.runtime.parity.localize import LOCALIZED, NOT_LOCALIZED, localize
from onnxedge.runtime.parity.rounding import Judge, Rounding
from onnxedge.runtime.parity.rows import FAILED, PASSED
from onnxedge.runtime.parity.tolerances import Target, Tolerance

CPU = [Target("cpu")]
CONVS = ("conv1", "conv2", "conv3", "conv4")
# The golden batch whose layers the default export stores (zeros and a random row).
LAYERS_BATCH = 2


# --- tiny graphs --------------------------------------------------------------------------------

_BRANCHY = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[N, 4] x) => (float[N, 4] y) {
    a = Relu(x)
    b = Neg(x)
    c = Add(a, b)
    s = Shape(c)
    y = Identity(c)
}
"""


def test_expose_intermediates_outputs_every_tensor_in_order_with_its_type_and_depth():
    model = onnx.parser.parse_model(_BRANCHY)
    before = model.SerializeToString()
    exposed, tensors, unknown = expose_intermediates(model)
    assert model.SerializeToString() == before  # the model itself is not changed
    assert [t.name for t in tensors] == ["a", "b", "c", "s", "y"]
    assert [(t.op_type, t.index, t.depth) for t in tensors] == [
        ("Relu", 1, 1),
        ("Neg", 2, 1),
        ("Add", 3, 2),
        ("Shape", 4, 3),
        ("Identity", 5, 3),
    ]
    assert unknown == ()
    types = {o.name: o.type.tensor_type.elem_type for o in exposed.graph.output}
    assert types["s"] == onnx.TensorProto.INT64 and types["a"] == onnx.TensorProto.FLOAT
    assert exposed.graph.output[0].name == "y"  # the model's own output stays first
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([[1.0, -2.0, 3.0, -4.0]], dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {"x": x}), strict=True))
    np.testing.assert_array_equal(out["c"], np.maximum(x, 0) - x)
    np.testing.assert_array_equal(out["s"], [1, 4])


def _tensor(name: str = "t", depth: int = 1) -> ExposedTensor:
    return ExposedTensor(name, f"node_{name}", "Conv", depth, depth)


def test_a_large_activation_is_not_flagged_for_a_tiny_relative_error():
    rng = np.random.default_rng(0)
    expected = rng.normal(size=(2, 8, 4, 4)) * 1e3
    actual = expected + 1e-4  # an absolute error far above any atol, 1e-7 of the scale
    result = compare_layer(_tensor(), actual, expected, tolerance=1e-5)
    assert result.status == PASSED, result.errors()
    assert result.scaled_error == pytest.approx(1e-4 / np.sqrt(np.mean(expected**2)))


def test_a_tiny_activation_is_not_missed_for_its_small_absolute_error():
    rng = np.random.default_rng(0)
    expected = rng.normal(size=(2, 8, 4, 4)) * 1e-6
    actual = expected.copy()
    actual[0, 3, 1, 2] += 1e-9  # 1e-3 of the scale; an absolute tolerance of 1e-5 would pass it
    result = compare_layer(_tensor(), actual, expected, tolerance=1e-5)
    assert result.status == FAILED
    assert 1e-4 < result.scaled_error < 1e-2
    assert result.max_abs_error == pytest.approx(1e-9)


@pytest.mark.parametrize(
    ("actual", "expected", "status", "detail"),
    [
        (np.zeros((2, 3)), np.zeros((2, 3)), PASSED, "the reference is all zeros"),
        (np.full((2, 3), 1e-12), np.zeros((2, 3)), FAILED, "the reference is all zeros"),
        (np.ones((2, 3)), np.ones((3, 2)), FAILED, "shape [2, 3], the reference's [3, 2]"),
        (np.array([1.0, np.nan]), np.array([1.0, 2.0]), FAILED, "non-finite values"),
        (np.ones(2), np.array([1.0, np.inf]), FAILED, "non-finite values in the reference"),
    ],
)
def test_layer_comparison_edge_cases(actual, expected, status, detail):
    result = compare_layer(_tensor(), actual, expected, tolerance=1e-3)
    assert (result.status, result.detail) == (status, detail)
    if status == FAILED:
        assert math.isinf(result.scaled_error)
        assert result.to_dict()["scaled_error"] is None  # JSON has no inf


def test_a_tensor_without_reference_is_reported_not_passed():
    result = compare_layer(_tensor(), np.ones(3), None, tolerance=1e-3)
    assert result.status == NO_REFERENCE and not result.compared and not result.failed


def test_the_rows_own_bound_judges_the_tensors_the_row_judges():
    expected = np.array([[0.01], [2.0]])
    # The row's bound: 10 x PyTorch's float32 error of 1e-6, 1e-5. 5e-6 off near zero: 5e-4 of
    # the scale, far over a scale tolerance of 1e-5, but within the row's bound; 3e-4 off at 2.0
    # leaves it, though a scale tolerance of 1 would pass it.
    row_judge = Judge(Tolerance(1e-5, 1e-4), Rounding(1e-6, 1.4, 2), 10)
    within = compare_layer(
        _tensor(),
        expected + np.array([[5e-6], [0]]),
        expected,
        tolerance=1e-5,
        row_judge=row_judge,
    )
    outside = compare_layer(
        _tensor(),
        expected + np.array([[0], [3e-4]]),
        expected,
        tolerance=1.0,
        row_judge=row_judge,
    )
    assert within.status == PASSED and outside.status == FAILED
    assert "outside the row's bound" in outside.errors()
    assert outside.to_dict()["row_bound"]["factor"] == 10


def test_layer_tolerance_grows_with_depth_from_a_floor_to_crest_times_rtol():
    tolerances = [layer_tolerance(1e-4, d, 16) for d in range(1, 17)]
    assert tolerances == sorted(tolerances)
    assert tolerances[0] == pytest.approx(CREST * 1e-4 * MIN_DEPTH_SHARE)  # sqrt(1/16) = floor
    assert tolerances[3] == pytest.approx(CREST * 1e-4 * 0.5)  # sqrt(4/16)
    assert tolerances[-1] == pytest.approx(CREST * 1e-4)


# --- the smile bundle ---------------------------------------------------------------------------


def scale_weight(bundle: Path, name: str, factor: float) -> None:
    """Scale the initializer ``name`` of the bundle's model, and make the manifest agree."""
    model = onnx.load(str(bundle / "model.onnx"))
    (init,) = [i for i in model.graph.initializer if i.name == name]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), name))
    onnx.save(model, str(bundle / "model.onnx"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.onnx"]["sha256"] = sha256_file(bundle / "model.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def conv_nodes(bundle: Path) -> dict[str, str]:
    """The weight -> node name of each Conv of the bundle's model."""
    model = onnx.load(str(bundle / "model.onnx"))
    return {n.input[1]: n.name for n in model.graph.node if n.op_type == "Conv"}


def parity_and_localize(bundle: Path, *, when: str = "failed", sizes=(7,), layers=None):
    opened = Bundle.open(bundle)
    reference = load_golden(opened)
    report = run_parity(opened, reference, targets=CPU, batch_sizes=sizes)
    layers = layers if layers is not None else golden_layer_reference(opened)
    return report, localize(opened, report.rows, layers, reference=reference, when=when)


def test_the_module_map_names_every_tensor_of_the_smile_model(smile_bundle):
    modules = layer_modules(json.loads((smile_bundle / "manifest.json").read_text()))
    model = onnx.load(str(smile_bundle / "model.onnx"))
    named = {o: str(modules[o]) for n in model.graph.node for o in n.output}
    assert named[model.graph.node[0].output[0]] == "conv1 (Conv2d)"
    assert [str(modules[o]) for o in (model.graph.output[0].name,)] == ["sigmoid (Sigmoid)"]
    assert sorted({m.name for m in modules.values()}) == sorted(
        [
            "conv1",
            "conv2",
            "conv3",
            "conv4",
            "relu1",
            "relu2",
            "relu3",
            "relu4",
            "pool1",
            "pool2",
            "pool3",
            "pool4",
            "flatten",
            "fc",
            "sigmoid",
        ]
    )


@pytest.mark.parametrize("conv", CONVS)
def test_a_convolution_scaled_by_one_percent_is_the_first_divergent_layer(bundle_copy, conv):
    node = conv_nodes(bundle_copy)[f"{conv}.weight"]
    scale_weight(bundle_copy, f"{conv}.weight", 1.01)
    report, (found,) = parity_and_localize(bundle_copy, sizes=(64,))
    assert not report  # the row fails, at batch 64 ...
    first = found.first_divergent
    assert first is not None, "\n".join(found.lines())
    assert (first.tensor.node, first.tensor.op_type) == (node, "Conv")
    assert (first.module.name, first.module.cls) == (conv, "Conv2d")
    assert found.batch == LAYERS_BATCH  # ... and is localized where the golden layers are
    before = found.layers[: found.layers.index(first)]
    assert all(layer.status == PASSED for layer in before)
    assert len(before) == 3 * CONVS.index(conv)  # conv, relu and pool before each conv
    assert found.reproduced is True
    assert str(found).startswith(
        f"{LOCALIZED} | cpu | batch {LAYERS_BATCH} | tf32 n/a | first divergent: Conv"
    )
    as_json = json.loads(json.dumps(found.to_dict()))
    assert as_json["first_divergent"]["node"] == node
    assert as_json["first_divergent"]["module"] == {"module": conv, "class": "Conv2d"}
    assert as_json["first_divergent"]["scaled_error"] > as_json["first_divergent"]["tolerance"]
    assert as_json["batch"] == 64 and as_json["localized_batch"] == LAYERS_BATCH


def test_an_untouched_bundle_localizes_nothing(smile_bundle):
    report, found = parity_and_localize(smile_bundle)
    assert report and found == ()  # only failing rows are localized by default
    report, (found,) = parity_and_localize(smile_bundle, when="always")
    assert not found and found.first_divergent is None
    assert len(found.layers) == 15 and all(layer.status == PASSED for layer in found.layers)
    assert found.reproduced is None and found.localizing_run == PASSED
    assert str(found).startswith(f"{NOT_LOCALIZED} | cpu | batch {LAYERS_BATCH} |")


def test_a_localizing_run_that_does_not_fail_says_so(smile_bundle):
    """Exposing tensors can change fusions; here a passing row stands in for a failure the
    localizing run does not reproduce: the report says so and keeps the row's verdict."""
    opened = Bundle.open(smile_bundle)
    reference = load_golden(opened)
    report = run_parity(opened, reference, targets=CPU, batch_sizes=(7,))
    failed = [dataclasses.replace(r, status=FAILED) for r in report.rows]
    (found,) = localize(opened, failed, golden_layer_reference(opened), reference=reference)
    assert found.reproduced is False
    assert "the localizing run passes" in str(found) and "FAILED verdict stands" in str(found)
    assert found.to_dict()["row_status"] == FAILED


def test_another_model_of_the_same_graph_as_the_reference(smile_bundle, bundle_copy):
    """A variant against its original (as ``--variant int8 --against fp32`` does): no golden
    data needed, the exposed original run on the same inputs is the reference."""
    scale_weight(bundle_copy, "conv2.weight", 1.01)
    original = ExposedModel.of(Bundle.open(smile_bundle))
    reference = load_golden(Bundle.open(bundle_copy))
    layers = run_layer_reference(
        original.session(Target("cpu")),
        reference,
        input_name="input",
        description="the original model on cpu",
    )
    _, (found,) = parity_and_localize(bundle_copy, sizes=(2,), layers=layers)
    assert found.batch == 2 and found.reference == "the original model on cpu"
    assert found.first_divergent.module.name == "conv2"


def test_against_the_rows_own_provider_is_refused_per_row(bundle_copy):
    scale_weight(bundle_copy, "conv2.weight", 1.01)
    opened = Bundle.open(bundle_copy)
    reference = load_golden(opened)
    layers = against_provider(ExposedModel.of(opened), reference, Target("cpu"))
    _, (found,) = parity_and_localize(bundle_copy, layers=layers)
    assert not found and "the row runs on cpu, the reference" in found.reason
    assert str(found).startswith(f"{NOT_LOCALIZED} | cpu | batch 7 |")


def test_against_a_provider_that_cannot_run_here_is_one_error(smile_bundle, monkeypatch):
    from onnxedge.runtime.errors import OnnxEdgeError, ProviderUnavailable
    from onnxedge.runtime.parity import exposed as exposed_module

    def unavailable(model, config=None):
        raise ProviderUnavailable("requested CUDAExecutionProvider, available: CPU")

    opened = Bundle.open(smile_bundle)
    model = ExposedModel.of(opened)
    monkeypatch.setattr(exposed_module, "make_session", unavailable)
    with pytest.raises(OnnxEdgeError, match=r"^--against cuda with tf32 off: requested CUDA"):
        against_provider(model, load_golden(opened), Target("cuda", "off"))


def without_golden_layers(bundle: Path) -> Path:
    """The bundle as ``onnxedge export --no-golden-layers`` writes it."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["layers"]["golden"] = {"file": None, "reason": "--no-golden-layers was given"}
    del manifest["files"][GOLDEN_LAYERS]
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (bundle / GOLDEN_LAYERS).unlink()
    return bundle


def test_without_golden_layers_the_error_names_the_references_to_use(bundle_copy):
    with pytest.raises(NoGoldenLayers) as caught:
        golden_layer_reference(Bundle.open(without_golden_layers(bundle_copy)))
    message = str(caught.value)
    assert "has no golden layers (--no-golden-layers was given)" in message
    for reference in ("--against cpu", "--golden-layers", "--reference live"):
        assert reference in message, message


def test_without_golden_layers_and_without_torch_the_error_says_torch_is_missing(bundle_copy):
    result = run_without_torch(
        ["parity", without_golden_layers(bundle_copy), "--providers", "cpu", "--localize"]
    )
    assert result.returncode == 1, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("onnxedge: error:")]
    assert line.startswith("onnxedge: error: cannot localize:")
    assert "Traceback" not in result.stderr
    for fragment in ("--against cpu", "--reference live (needs torch: pip install"):
        assert fragment in line, line
    assert result.stdout == ""  # refused before the run


@pytest.mark.parametrize(
    ("weight", "op_type", "module"),
    [("conv4.weight", "Conv", ("conv4", "Conv2d")), ("fc.weight", "Gemm", ("fc", "Linear"))],
)
def test_localizes_from_golden_layers_without_torch(bundle_copy, tmp_path, weight, op_type, module):
    """On a device: the command, torch blocked from import, the golden layers the reference."""
    model = onnx.load(str(bundle_copy / "model.onnx"))
    (node,) = [n.name for n in model.graph.node if weight in n.input]
    scale_weight(bundle_copy, weight, 1.01)
    report = tmp_path / "parity.json"
    args = ["parity", bundle_copy, "--providers", "cpu", "--batch-sizes", "7", "--localize"]
    result = run_without_torch([*args, "--json", report])
    assert result.returncode == 1, result.stderr  # the row failed; the verdict stands
    assert "Traceback" not in result.stderr
    (found,) = json.loads(report.read_text())["localization"]
    assert found["reference"].startswith("golden layers in golden_layers.npz")
    first = found["first_divergent"]
    assert (first["node"], first["op_type"]) == (node, op_type)
    assert first["module"] == dict(zip(("module", "class"), module, strict=True))
    assert f"first divergent: {op_type} '{node}' (module {module[0]} ({module[1]}))" in (
        result.stdout
    )


def test_altered_golden_layers_are_refused(bundle_copy):
    data = bytearray((bundle_copy / GOLDEN_LAYERS).read_bytes())
    data[-100] ^= 1
    (bundle_copy / GOLDEN_LAYERS).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"golden_layers\.npz"):
        golden_layer_reference(Bundle.open(bundle_copy))


def test_the_plot_is_a_png(bundle_copy):
    from onnxedge.runtime.parity.localize_plot import render_png

    scale_weight(bundle_copy, "conv3.weight", 1.01)
    _, found = parity_and_localize(bundle_copy)
    assert render_png(found).startswith(b"\x89PNG\r\n\x1a\n")


def test_an_openvino_row_is_localized(bundle_copy):
    pytest.importorskip("openvino")
    from onnxedge.runtime.parity import make_targets

    scale_weight(bundle_copy, "conv3.weight", 1.01)
    opened = Bundle.open(bundle_copy)
    reference = load_golden(opened)
    targets = make_targets(["cpu"], engines=["openvino"], precisions=["f32"])
    report = run_parity(opened, reference, targets=targets, batch_sizes=(7,))
    (found,) = localize(opened, report.rows, golden_layer_reference(opened), reference=reference)
    assert found.row.label == "openvino cpu f32"
    assert found.first_divergent.module.name == "conv3", "\n".join(found.lines())


# --- the command --------------------------------------------------------------------------------


def invoke(*args: object):
    from click.testing import CliRunner

    from onnxedge.runtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_parity_localize_names_the_layer_and_writes_json_and_plot(bundle_copy, tmp_path):
    scale_weight(bundle_copy, "conv2.weight", 1.01)
    report, plot = tmp_path / "parity.json", tmp_path / "layers.png"
    result = invoke(
        "parity",
        bundle_copy,
        "--providers",
        "cpu",
        "--batch-sizes",
        "2,7",
        "--localize",
        "--json",
        report,
        "--plot",
        plot,
    )
    assert result.exit_code == 1, result.output  # the rows' verdicts, unchanged
    (line,) = [x for x in result.output.splitlines() if x.startswith(LOCALIZED)]
    node = conv_nodes(bundle_copy)["conv2.weight"]
    assert f"first divergent: Conv '{node}' (module conv2 (Conv2d))" in line
    assert "for the rows at batch 7 too" in result.output  # one table for both rows
    payload = json.loads(report.read_text())
    (found,) = payload["localization"]
    assert found["first_divergent"]["node"] == node and found["reproduced"] is True
    assert [r["batch"] for r in found["rows"]] == [LAYERS_BATCH, 7]
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_parity_output_and_json_are_unchanged_without_localize(smile_bundle, tmp_path):
    report = tmp_path / "parity.json"
    result = invoke("parity", smile_bundle, "--providers", "cpu", "--json", report)
    assert result.exit_code == 0, result.output
    assert "localiz" not in result.output.lower()
    assert "localization" not in json.loads(report.read_text())


def test_parity_localize_on_a_passing_bundle(smile_bundle, tmp_path):
    result = invoke(
        "parity", smile_bundle, "--providers", "cpu", "--batch-sizes", "7", "--localize"
    )
    assert result.exit_code == 0, result.output
    assert "localize: no row failed, nothing to localize" in result.output
    result = invoke(
        "parity", smile_bundle, "--providers", "cpu", "--batch-sizes", "7", "--localize", "always"
    )
    assert result.exit_code == 0, result.output
    assert (
        f"{NOT_LOCALIZED} | cpu | batch {LAYERS_BATCH} | tf32 n/a | every one of 15 tensors"
    ) in result.output


@pytest.mark.parametrize(
    "args", [("--against", "cpu"), ("--plot", "x.png"), ("--localize", "sometimes")]
)
def test_parity_localize_usage_errors(smile_bundle, args):
    result = invoke("parity", smile_bundle, "--providers", "cpu", *args)
    assert result.exit_code == 2, result.output


def test_parity_localize_against_the_live_module(bundle_copy):
    """--reference live: PyTorch's hooks at any batch size (here 3, which no golden file holds)."""
    scale_weight(bundle_copy, "conv4.weight", 1.01)
    result = invoke(
        "parity",
        bundle_copy,
        "--providers",
        "cpu",
        "--batch-sizes",
        "3",
        "--reference",
        "live",
        "--localize",
    )
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith(LOCALIZED)]
    assert line.startswith(f"{LOCALIZED} | cpu | batch 3 |")
    assert "(module conv4 (Conv2d))" in line and "PyTorch" in result.output


# --- the export side ----------------------------------------------------------------------------


def test_the_export_stores_golden_layers_and_records_them(smile_bundle):
    manifest = json.loads((smile_bundle / "manifest.json").read_text())
    golden = manifest["layers"]["golden"]
    assert golden["file"] == GOLDEN_LAYERS and golden["batch_sizes"] == [LAYERS_BATCH]
    assert golden["tensors"] == 15 and golden["not_matching_onnx"] == []
    assert manifest["files"][GOLDEN_LAYERS]["sha256"] == sha256_file(smile_bundle / GOLDEN_LAYERS)
    assert golden["bytes"] <= golden["budget_mb"] * 1e6
    layers = golden_layer_reference(Bundle.open(smile_bundle)).layers
    golden_inputs = load_golden(Bundle.open(smile_bundle)).batches[LAYERS_BATCH].inputs
    np.testing.assert_array_equal(layers.inputs[LAYERS_BATCH], golden_inputs)


def _tiny_module():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 1),
        nn.Sigmoid(),
    )


def test_the_budget_and_the_opt_out_are_recorded(tmp_path):
    from onnxedge.export import export_bundle

    # A row of this model's layers: 2 x 4x16x16 + 4 + 4 + 1 + 1 values and a 3x16x16 input,
    # 11,288 bytes; 0.03 MB holds batch 2 of 1, 2, 7.
    small = export_bundle(
        _tiny_module(),
        input_shape=(3, 16, 16),
        out=tmp_path / "small",
        golden_batch_sizes=(1, 2, 7),
        golden_layers_budget_mb=0.03,
    )
    golden = small.manifest["layers"]["golden"]
    assert golden["batch_sizes"] == [2] and golden["tensors"] == 6
    none = export_bundle(
        _tiny_module(),
        input_shape=(3, 16, 16),
        out=tmp_path / "none",
        golden_batch_sizes=(1, 2, 7),
        golden_layers=False,
    )
    assert none.manifest["layers"]["golden"] == {
        "file": None,
        "reason": "--no-golden-layers was given",
    }
    assert GOLDEN_LAYERS not in none.manifest["files"]
    assert not (tmp_path / "none" / GOLDEN_LAYERS).exists()
    assert none.manifest["layers"]["modules"]  # the map is stored either way


def test_layers_over_the_budget_are_not_stored_and_the_reason_says_why(smile_bundle):
    from onnxedge.export.layers import make_golden_layers
    from onnxedge.models.weights import module_from_manifest

    opened = Bundle.open(smile_bundle)
    made = make_golden_layers(
        module_from_manifest(opened.manifest),
        onnx.load(str(opened.model_path)),
        layer_modules(opened.manifest),
        {1: load_golden(opened).batches[1].inputs},
        budget_mb=1.0,
    )
    assert made.data is None
    assert made.block["golden"]["reason"] == (
        "2.2 MB a row, over the budget of 1 MB (--golden-layers-budget)"
    )


def test_a_golden_layer_that_does_not_match_onnx_is_left_out(smile_bundle):
    """A wrong map must not make a bundle localize wrongly: each layer is checked against ONNX
    Runtime's value of its tensor before it is stored."""
    from onnxedge.export.layers import make_golden_layers
    from onnxedge.models.weights import module_from_manifest

    opened = Bundle.open(smile_bundle)
    modules = dict(layer_modules(opened.manifest))
    relu, pool = (t for t, m in modules.items() if m.name in ("relu2", "pool2"))
    modules[relu], modules[pool] = modules[pool], modules[relu]  # swapped: shapes differ
    made = make_golden_layers(
        module_from_manifest(opened.manifest),
        onnx.load(str(opened.model_path)),
        modules,
        {2: load_golden(opened).batches[2].inputs},
    )
    assert sorted(made.block["golden"]["not_matching_onnx"]) == sorted([relu, pool])
    assert made.block["golden"]["tensors"] == 13


def test_the_module_map_through_torchscript_names_and_the_gap_rewrite():
    import torch

    from onnxedge.export.exporter import export_module
    from onnxedge.export.layers import carry_modules, module_outputs, tensor_modules
    from onnxedge.export.pipeline import lower_graph
    from onnxedge.models.smile_cnn import smile_cnn

    torch.manual_seed(0)
    module = smile_cnn("mean").eval()  # x.mean((2, 3)): ReduceMean -> Flatten(GlobalAveragePool)
    exported = export_module(module, (3, 64, 64), exporter="torchscript", opset=17)
    final = lower_graph(exported).model
    modules = carry_modules(tensor_modules(exported, module), final)
    (gap,) = [n for n in final.graph.node if n.op_type == "GlobalAveragePool"]
    assert str(modules[gap.output[0]]) == "pool4 (SpatialMean)"  # a tensor the rewrite made
    assert module_outputs(final, modules)["pool4"] == "/pool4/ReduceMean_output_0"
    assert str(modules["/conv3/Conv_output_0"]) == "conv3 (Conv2d)"


def test_the_module_map_names_nested_modules_and_hooks_clone_in_place_outputs():
    import torch
    from torch import nn

    from onnxedge.export.exporter import export_module
    from onnxedge.export.layers import capture_layers, module_outputs, tensor_modules

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.act = nn.ReLU(inplace=True)  # overwrites the conv's output tensor

        def forward(self, x):
            return self.act(self.conv(x)) + x

    torch.manual_seed(0)
    module = nn.Sequential(Block(), nn.Flatten(), nn.Linear(3 * 8 * 8, 1)).eval()
    exported = export_module(module, (3, 8, 8))
    modules = tensor_modules(exported, module)
    names = {str(m) for m in modules.values()}
    assert {"0.conv (Conv2d)", "0.act (ReLU)", "0 (Block)", "2 (Linear)"} <= names
    outputs = module_outputs(exported, modules)
    (add,) = [n.output[0] for n in exported.graph.node if n.op_type == "Add"]
    assert outputs["0"] == add  # the block's output is its last tensor
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8))
    caught = capture_layers(module.double(), x, outputs)
    assert (caught[outputs["0.conv"]] < 0).any()  # the conv's own output, not the ReLU's


def test_a_unit_that_adds_then_calls_its_own_relu_module_returns_the_relus_tensor():
    """pytorchcv's ResUnit: ``self.activ(body(x) + x)``. The unit's hook output is the ReLU's
    tensor; the Add the unit made itself is no module's output (it was compared with the ReLU's
    output, and `--localize` named it as the first divergent layer)."""
    import torch
    from torch import nn

    from onnxedge.export.exporter import export_module
    from onnxedge.export.layers import capture_layers, module_outputs, tensor_modules

    class ResUnit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 3, 3, padding=1)
            self.activ = nn.ReLU()

        def forward(self, x):
            return self.activ(self.body(x) + x)

    torch.manual_seed(0)
    module = nn.Sequential(ResUnit(), nn.Flatten(), nn.Linear(3 * 8 * 8, 1)).eval()
    exported = export_module(module, (3, 8, 8))
    modules = tensor_modules(exported, module)
    outputs = module_outputs(exported, modules)
    (add,) = [n.output[0] for n in exported.graph.node if n.op_type == "Add"]
    (relu,) = [n.output[0] for n in exported.graph.node if n.op_type == "Relu"]
    assert str(modules[add]) == "0 (ResUnit)"  # made by the unit itself
    assert outputs["0"] == outputs["0.activ"] == relu
    assert add not in outputs.values()
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8))
    caught = capture_layers(module.double(), x, outputs)
    assert add not in caught and (caught[relu] >= 0).all()


def test_a_bias_folded_into_a_conv_inside_a_container_is_found():
    """onnxsim folds a constant added after a convolution into its bias; the offset is found by
    the Conv's own module, also where a container's output is that Conv's tensor (a Sequential
    ending with it)."""
    import onnx
    import torch
    from torch import nn

    from onnxedge.export.exporter import export_module
    from onnxedge.export.layers import folded_biases, module_outputs, tensor_modules

    torch.manual_seed(0)
    module = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), nn.ReLU()).eval()
    exported = export_module(module, (3, 8, 8))
    (conv,) = [n for n in exported.graph.node if n.op_type == "Conv"]
    (bias,) = [i for i in exported.graph.initializer if i.name == conv.input[2]]
    folded = onnx.numpy_helper.to_array(bias) + np.float32(3)
    bias.CopyFrom(onnx.numpy_helper.from_array(folded, bias.name))
    outputs = module_outputs(exported, tensor_modules(exported, module))
    assert sorted(n for n, t in outputs.items() if t == conv.output[0]) == ["0", "0.0"]
    offsets = folded_biases(exported, module, outputs)
    assert list(offsets) == [conv.output[0]]
    np.testing.assert_allclose(offsets[conv.output[0]].ravel(), 3.0, rtol=1e-6)


def test_a_tensor_whose_innermost_module_returns_a_tuple_is_caught_by_the_one_around_it():
    """A wrapper that returns the first of its inner module's tuple: the tensor's innermost
    module returns a tuple (no hook takes it), the wrapper returns the tensor alone."""
    import torch
    from torch import nn

    from onnxedge.export.exporter import export_module
    from onnxedge.export.layers import capture_layers, module_outputs, tensor_modules

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return torch.tanh(self.conv(x)), x

    class First(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            return self.pair(x)[0]

    torch.manual_seed(0)
    module = nn.Sequential(First(), nn.Flatten(), nn.Linear(3 * 4 * 4, 1)).eval()
    exported = export_module(module, (3, 4, 4))
    outputs = module_outputs(exported, tensor_modules(exported, module))
    (tanh,) = [n.output[0] for n in exported.graph.node if n.op_type == "Tanh"]
    assert outputs["0.pair"] == outputs["0"] == tanh
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4))
    caught = capture_layers(module.double(), x, outputs)
    assert tanh in caught and np.abs(caught[tanh]).max() < 1


# --- variants: parity --variant, and int8 against fp32 -----------------------------------------


def add_variant(
    bundle: Path, name: str, model: Path, fmt: str = "onnx", providers: tuple[str, ...] = ("cpu",)
) -> None:
    """Put ``model`` into the bundle as the variant ``name``, as `onnxedge optimize` lists one."""
    file = f"variants/{name}.{fmt}"
    (bundle / "variants").mkdir(exist_ok=True)
    (bundle / file).write_bytes(model.read_bytes())
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 2
    manifest["files"][file] = {"sha256": sha256_file(bundle / file)}
    manifest.setdefault("variants", {})[name] = {
        "file": file,
        "format": fmt,
        "precision": name.split("-")[0],
        "providers": list(providers),
        "gated": False,
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def quantize(bundle: Path, out: Path, nodes: list[str] | None = None) -> Path:
    """The bundle's model quantized to int8 (QDQ, per channel, calibrated on the golden inputs):
    every node as `onnxedge optimize` does (pre-processing fuses each Conv with its ReLU), or only
    ``nodes`` (onnxruntime's quantize_static alone, which keeps the graph's tensors)."""
    inputs = load_golden(Bundle.open(bundle)).batches[64].inputs
    if nodes is None:
        from onnxedge.runtime.variants.quantize import quantize_int8

        quantize_int8(bundle / "model.onnx", out, inputs)
        return out
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": inputs}])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(bundle / "model.onnx"),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes,
    )
    return out


@pytest.mark.parametrize("conv", ["conv2", "conv4"])
def test_int8_against_fp32_finds_the_one_quantized_convolution(bundle_copy, tmp_path, conv):
    node = conv_nodes(bundle_copy)[f"{conv}.weight"]
    add_variant(bundle_copy, "int8", quantize(bundle_copy, tmp_path / "q.onnx", [node]))
    report = tmp_path / "parity.json"
    result = invoke(
        "parity",
        bundle_copy,
        "--providers",
        "cpu",
        "--batch-sizes",
        "7",
        "--variant",
        "int8",
        "--localize",
        "--against",
        "fp32",
        "--json",
        report,
    )
    assert result.exit_code == 1, result.output  # the int8 row fails fp32's tolerance
    assert result.output.startswith("model: variants/int8.onnx (variant int8)\n")
    payload = json.loads(report.read_text())
    assert payload["variant"] == "int8"
    (found,) = payload["localization"]
    assert found["reference"] == "the fp32 model (model.onnx) on cpu"
    first = found["first_divergent"]
    assert (first["node"], first["module"]) == (node, {"module": conv, "class": "Conv2d"})
    compared = [layer for layer in found["layers"] if layer["status"] != NO_REFERENCE]
    before = compared[: [layer["node"] for layer in compared].index(node)]
    assert before and all(layer["status"] == PASSED for layer in before)
    # the Q/DQ tensors have no counterpart in fp32: listed, not compared
    assert any(layer["op_type"] == "QuantizeLinear" for layer in found["layers"])
    assert not {layer["tensor"] for layer in before} & set(found["largest"])


def test_int8_against_fp32_names_the_layers_with_the_largest_quantisation_error(
    bundle_copy, tmp_path
):
    add_variant(bundle_copy, "int8", quantize(bundle_copy, tmp_path / "q.onnx"))
    opened = Bundle.open(bundle_copy)
    reference = load_golden(opened)
    exposed = ExposedModel.of(opened, "int8")
    report = run_parity(opened, reference, targets=CPU, batch_sizes=(7,), model=exposed.model_path)
    (found,) = localize(
        opened,
        report.rows,
        against_variant(opened, "fp32", reference),
        reference=reference,
        exposed=exposed,
        when="always",
    )
    compared = [layer for layer in found.layers if layer.compared]
    assert len(compared) == 11  # each Conv fused with its ReLU: 15 tensors less 4
    # quantisation errors, measured here without the library: error over the fp32 tensor's RMS
    fp32 = ort.InferenceSession(
        expose_intermediates(onnx.load(str(opened.model_path)))[0].SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    int8 = ort.InferenceSession(exposed.data, providers=["CPUExecutionProvider"])
    x = {"input": reference.batches[7].inputs}
    want = dict(zip([o.name for o in fp32.get_outputs()], fp32.run(None, x), strict=True))
    got = dict(zip([o.name for o in int8.get_outputs()], int8.run(None, x), strict=True))
    errors = {
        t: float(np.abs(got[t] - want[t]).max() / np.sqrt(np.mean(want[t].astype(float) ** 2)))
        for t in (layer.tensor.name for layer in compared)
    }
    largest = sorted(errors, key=errors.get, reverse=True)[:3]
    assert [layer.tensor.name for layer in found.largest()] == largest
    assert found.to_dict()["largest"] == largest
    joined = unwrap("\n".join(found.lines())).splitlines()
    (line,) = [x for x in joined if x.startswith("  largest error/scale: ")]
    for layer in found.largest():
        assert layer.label() in line
    first = found.first_divergent
    assert (str(first.module), first.tensor.op_type) == ("conv1 + relu1 (Conv2d + ReLU)", "Conv")


def test_parity_variant_runs_the_variant_and_fp32_is_model_onnx(bundle_copy, tmp_path):
    node = conv_nodes(bundle_copy)["conv3.weight"]
    add_variant(bundle_copy, "int8", quantize(bundle_copy, tmp_path / "q.onnx", [node]))
    args = ("parity", bundle_copy, "--providers", "cpu", "--batch-sizes", "7")
    fp32 = invoke(*args, "--variant", "fp32")
    assert fp32.exit_code == 0, fp32.output
    assert not fp32.output.startswith("model:")
    int8 = invoke(*args, "--variant", "INT8")
    assert int8.exit_code == 1, int8.output
    assert "FAILED | cpu | batch 7 |" in int8.output


def test_parity_variant_errors(bundle_copy, tmp_path):
    args = ("parity", bundle_copy, "--providers", "cpu", "--batch-sizes", "7")
    missing = invoke(*args, "--variant", "int8")
    assert missing.exit_code == 1
    assert "has no 'int8' variant; it has: fp32" in missing.output
    add_variant(bundle_copy, "int8-ort", bundle_copy / "model.onnx", fmt="ort")
    ort_format = invoke(*args, "--variant", "int8-ort")
    assert ort_format.exit_code == 1
    assert "variants/int8-ort.ort is in the ORT format" in ort_format.output
    assert ort_format.output.rstrip().endswith("was converted from: --variant int8")
    same = invoke(*args, "--localize", "--against", "fp32")
    assert same.exit_code == 2 and "that is the model being checked" in same.output


@pytest.mark.parametrize(("precision", "localized"), [("bf16", True), ("f32", False)])
def test_an_openvino_row_against_onnxruntime_on_the_cpu(
    smile_bundle, tmp_path, precision, localized
):
    """--against cpu: no golden data, the same graph under onnxruntime's CPU EP as the reference.
    bf16 held to f32's logit tolerance fails, and the first layer (which bf16 rounds) is found;
    f32 agrees with onnxruntime in every layer."""
    pytest.importorskip("openvino")
    from onnxedge.runtime.engines.openvino import loader

    if loader.unavailable_reason(loader.OpenVinoConfig(precision=precision)):
        pytest.skip(f"this CPU cannot run OpenVINO in {precision}")
    report = tmp_path / "parity.json"
    result = invoke(
        "parity",
        smile_bundle,
        "--engines",
        "openvino",
        "--precision",
        precision,
        "--batch-sizes",
        "7",
        "--logit-atol",
        "1e-5",
        "--logit-rtol",
        "1e-4",
        "--localize",
        "always",
        "--against",
        "cpu",
        "--json",
        report,
    )
    assert result.exit_code == (1 if localized else 0), result.output
    (found,) = json.loads(report.read_text())["localization"]
    assert found["reference"] == "the same graph on cpu"
    assert found["label"] == f"openvino cpu {precision}"
    if localized:
        assert found["first_divergent"]["node"] == conv_nodes(smile_bundle)["conv1.weight"]
        assert found["first_divergent"]["module"] == {"module": "conv1", "class": "Conv2d"}
        assert found["reproduced"] is True
    else:
        assert found["first_divergent"] is None
        assert all(layer["status"] == PASSED for layer in found["layers"])


def test_parity_variant_fp16_is_not_run_on_the_cpu_ep(bundle_copy, tmp_path):
    """fp16 is made for the CUDA EP (`provider_for`, as predict and evaluate): its CPU rows are
    SKIPPED with the reason, FAILED where the CPU is required; never passed."""
    add_variant(bundle_copy, "fp16", bundle_copy / "model.onnx", providers=("cuda",))
    report = tmp_path / "parity.json"
    args = (
        "parity",
        bundle_copy,
        "--providers",
        "cpu",
        "--batch-sizes",
        "1,7",
        "--variant",
        "fp16",
    )
    result = invoke(*args, "--json", report)
    assert result.exit_code == 1, result.output  # no row ran
    rows = json.loads(report.read_text())["rows"]
    assert [(r["batch"], r["status"]) for r in rows] == [(1, "skipped"), (7, "skipped")]
    assert "made for the cuda execution provider, not the CPU" in rows[0]["reason"]
    required = invoke(*args, "--require", "cpu")
    assert required.exit_code == 1
    assert "FAILED | cpu | batch 1 | required, but it did not run" in unwrap(required.output)
    # the same file listed as a CPU variant runs, and passes: the rule, not the file, skipped it
    add_variant(bundle_copy, "int8", bundle_copy / "model.onnx")
    assert invoke(*args[:-1], "int8").exit_code == 0


def test_golden_layers_of_a_tensor_model_onnx_does_not_make_are_a_bundle_error(smile_bundle):
    """Golden layers are keyed to model.onnx's tensors: one it does not make means the file is
    not this model's. Another model (a variant) may lack some: those are not compared."""
    from onnxedge.runtime.parity.layer_reference import GoldenLayerReference

    opened = Bundle.open(smile_bundle)
    reference = load_golden(opened)
    report = run_parity(opened, reference, targets=CPU, batch_sizes=(7,))
    layers = golden_layer_reference(opened).layers
    ghost = {LAYERS_BATCH: {**layers.batches[LAYERS_BATCH], "ghost": np.zeros(3, np.float32)}}
    strange = GoldenLayerReference(dataclasses.replace(layers, batches=ghost))
    with pytest.raises(BundleError, match=r"tensors that model\.onnx does not make: ghost$"):
        localize(opened, report.rows, strange, reference=reference, when="always")
    (found,) = localize(
        opened, report.rows, dataclasses.replace(strange, complete=False), when="always"
    )
    assert not found and len([layer for layer in found.layers if layer.compared]) == 15
