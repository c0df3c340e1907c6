"""Layer localisation (`onnxedge.runtime.parity.localize`): tiny graphs for the pieces, then the
smile bundle: a convolution weight scaled by 1% is found at that convolution, by node and module,
for each of the four; an untouched bundle localizes nothing; golden layers, another provider or
another model as the reference; what happens without golden layers, and without torch."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from torchless import run_python_without_torch

from onnxedge.runtime.bundle import Bundle
from onnxedge.runtime.errors import BundleError
from onnxedge.runtime.hashing import sha256_file
from onnxedge.runtime.parity import load_golden, run_parity
from onnxedge.runtime.parity.exposed import ExposedModel, ExposedTensor, expose_intermediates
from onnxedge.runtime.parity.layer_compare import (
    CREST,
    MIN_DEPTH_SHARE,
    NO_REFERENCE,
    compare_layer,
    layer_tolerance,
)
from onnxedge.runtime.parity.layers import GOLDEN_LAYERS, NoGoldenLayers, layer_modules
from onnxedge.runtime.parity.localize import (
    LOCALIZED,
    NOT_LOCALIZED,
    against_provider,
    golden_layer_reference,
    localize,
    run_layer_reference,
)
from onnxedge.runtime.parity.rows import FAILED, PASSED
from onnxedge.runtime.parity.tolerances import Target, Tolerance

CPU = [Target("cpu")]
CONVS = ("conv1", "conv2", "conv3", "conv4")


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


def test_the_rows_own_tolerance_judges_the_tensors_the_row_judges():
    expected = np.array([[0.01], [2.0]])
    # 5e-6 off near zero: 5e-4 of the scale, far over a scale tolerance of 1e-5, but within the
    # row's 1e-5 + 1e-4 * |ref| elementwise; 3e-4 off at 2.0 leaves it.
    within = compare_layer(
        _tensor(),
        expected + np.array([[5e-6], [0]]),
        expected,
        tolerance=1e-5,
        elementwise=Tolerance(1e-5, 1e-4),
    )
    outside = compare_layer(
        _tensor(),
        expected + np.array([[0], [3e-4]]),
        expected,
        tolerance=1.0,
        elementwise=Tolerance(1e-5, 1e-4),
    )
    assert within.status == PASSED and outside.status == FAILED
    assert "row's tolerance" in outside.errors()


def test_layer_tolerance_grows_with_depth_from_a_floor_to_crest_times_rtol():
    tolerances = [layer_tolerance(1e-4, d, 16) for d in range(1, 17)]
    assert tolerances == sorted(tolerances)
    assert tolerances[0] == pytest.approx(CREST * 1e-4 * MIN_DEPTH_SHARE)  # sqrt(1/16) = floor
    assert tolerances[3] == pytest.approx(CREST * 1e-4 * 0.5)  # sqrt(4/16)
    assert tolerances[-1] == pytest.approx(CREST * 1e-4)


# --- the smile bundle ---------------------------------------------------------------------------


def add_golden_layers(bundle: Path) -> None:
    """Golden layers and the module map, as the export stores them, added to a bundle copy."""
    from onnxedge.export.exporter import export_module
    from onnxedge.export.layers import carry_modules, make_golden_layers, tensor_modules
    from onnxedge.models.weights import module_from_manifest

    manifest = json.loads((bundle / "manifest.json").read_text())
    module = module_from_manifest(manifest)
    final = onnx.load(str(bundle / "model.onnx"))
    modules = carry_modules(tensor_modules(export_module(module, (3, 64, 64)), module), final)
    golden = load_golden(Bundle.open(bundle))
    made = make_golden_layers(
        module, final, modules, {b: golden.batches[b].inputs for b in golden.batch_sizes}
    )
    (bundle / GOLDEN_LAYERS).write_bytes(made.data)
    manifest["layers"] = made.block
    manifest["files"][GOLDEN_LAYERS] = {"sha256": sha256_file(bundle / GOLDEN_LAYERS)}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def layered_bundle(smile_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bundle with golden layers (read-only: copy it with `layered_copy`)."""
    out = Path(shutil.copytree(smile_bundle, tmp_path_factory.mktemp("layered") / "smile"))
    add_golden_layers(out)
    return out


@pytest.fixture
def layered_copy(layered_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(layered_bundle, tmp_path / "bundle"))


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


def test_the_module_map_names_every_tensor_of_the_smile_model(layered_bundle):
    modules = layer_modules(json.loads((layered_bundle / "manifest.json").read_text()))
    model = onnx.load(str(layered_bundle / "model.onnx"))
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
def test_a_convolution_scaled_by_one_percent_is_the_first_divergent_layer(layered_copy, conv):
    node = conv_nodes(layered_copy)[f"{conv}.weight"]
    scale_weight(layered_copy, f"{conv}.weight", 1.01)
    report, (found,) = parity_and_localize(layered_copy, sizes=(64,))
    assert not report  # the row fails, at batch 64 ...
    first = found.first_divergent
    assert first is not None, "\n".join(found.lines())
    assert (first.tensor.node, first.tensor.op_type) == (node, "Conv")
    assert (first.module.name, first.module.cls) == (conv, "Conv2d")
    assert found.batch == 7  # ... and is localized where the golden layers are
    before = found.layers[: found.layers.index(first)]
    assert all(layer.status == PASSED for layer in before)
    assert len(before) == 3 * CONVS.index(conv)  # conv, relu and pool before each conv
    assert found.reproduced is True
    assert str(found).startswith(f"{LOCALIZED} | cpu | batch 7 | tf32 n/a | first divergent: Conv")
    as_json = json.loads(json.dumps(found.to_dict()))
    assert as_json["first_divergent"]["node"] == node
    assert as_json["first_divergent"]["module"] == {"module": conv, "class": "Conv2d"}
    assert as_json["first_divergent"]["scaled_error"] > as_json["first_divergent"]["tolerance"]
    assert as_json["batch"] == 64 and as_json["localized_batch"] == 7


def test_an_untouched_bundle_localizes_nothing(layered_bundle):
    report, found = parity_and_localize(layered_bundle)
    assert report and found == ()  # only failing rows are localized by default
    report, (found,) = parity_and_localize(layered_bundle, when="always")
    assert not found and found.first_divergent is None
    assert len(found.layers) == 15 and all(layer.status == PASSED for layer in found.layers)
    assert found.reproduced is None and found.localizing_run == PASSED
    assert str(found).startswith(f"{NOT_LOCALIZED} | cpu | batch 7 |")


def test_a_localizing_run_that_does_not_fail_says_so(layered_bundle):
    """Exposing tensors can change fusions; here a passing row stands in for a failure the
    localizing run does not reproduce: the report says so and keeps the row's verdict."""
    opened = Bundle.open(layered_bundle)
    reference = load_golden(opened)
    report = run_parity(opened, reference, targets=CPU, batch_sizes=(7,))
    failed = [dataclasses.replace(r, status=FAILED) for r in report.rows]
    (found,) = localize(opened, failed, golden_layer_reference(opened), reference=reference)
    assert found.reproduced is False
    assert "the localizing run passes" in str(found) and "FAILED verdict stands" in str(found)
    assert found.to_dict()["row_status"] == FAILED


def test_another_model_of_the_same_graph_as_the_reference(layered_bundle, layered_copy):
    """A variant against its original (as ``--variant int8 --against fp32`` does): no golden
    data needed, the exposed original run on the same inputs is the reference."""
    scale_weight(layered_copy, "conv2.weight", 1.01)
    original = ExposedModel.of(Bundle.open(layered_bundle))
    reference = load_golden(Bundle.open(layered_copy))
    layers = run_layer_reference(
        original.session(Target("cpu")),
        reference,
        input_name="input",
        description="the original model on cpu",
    )
    _, (found,) = parity_and_localize(layered_copy, sizes=(2,), layers=layers)
    assert found.batch == 2 and found.reference == "the original model on cpu"
    assert found.first_divergent.module.name == "conv2"


def test_against_the_rows_own_provider_is_refused_per_row(layered_copy):
    scale_weight(layered_copy, "conv2.weight", 1.01)
    opened = Bundle.open(layered_copy)
    reference = load_golden(opened)
    layers = against_provider(ExposedModel.of(opened), reference, Target("cpu"))
    _, (found,) = parity_and_localize(layered_copy, layers=layers)
    assert not found and "the row runs on cpu, the reference" in found.reason
    assert str(found).startswith(f"{NOT_LOCALIZED} | cpu | batch 7 |")


def test_against_a_provider_that_cannot_run_here_is_one_error(layered_bundle, monkeypatch):
    from onnxedge.runtime.errors import OnnxEdgeError, ProviderUnavailable
    from onnxedge.runtime.parity import exposed as exposed_module

    def unavailable(model, config=None):
        raise ProviderUnavailable("requested CUDAExecutionProvider, available: CPU")

    opened = Bundle.open(layered_bundle)
    model = ExposedModel.of(opened)
    monkeypatch.setattr(exposed_module, "make_session", unavailable)
    with pytest.raises(OnnxEdgeError, match=r"^--against cuda with tf32 off: requested CUDA"):
        against_provider(model, load_golden(opened), Target("cuda", "off"))


def test_without_golden_layers_the_error_names_the_references_to_use(smile_bundle):
    with pytest.raises(NoGoldenLayers) as caught:
        golden_layer_reference(Bundle.open(smile_bundle))
    message = str(caught.value)
    assert "has no golden layers" in message
    for reference in ("--against cpu", "--golden-layers", "--reference live"):
        assert reference in message, message


def test_without_golden_layers_and_without_torch_the_error_says_torch_is_missing(smile_bundle):
    code = """
from onnxedge.runtime.bundle import Bundle
from onnxedge.runtime.parity.layers import NoGoldenLayers
from onnxedge.runtime.parity.localize import golden_layer_reference
try:
    golden_layer_reference(Bundle.open(sys.argv[1]))
except NoGoldenLayers as e:
    print(e)
"""
    result = run_python_without_torch(code, [str(smile_bundle)])
    assert result.returncode == 0, result.stderr
    assert "install torch (pip install 'onnxedge[export]') and use --reference live" in (
        result.stdout
    )
    assert "--against cpu" in result.stdout


def test_localizes_from_golden_layers_without_torch(layered_copy):
    scale_weight(layered_copy, "conv4.weight", 1.01)
    code = """
from onnxedge.runtime.bundle import Bundle
from onnxedge.runtime.parity import load_golden, run_parity, Target
from onnxedge.runtime.parity.localize import golden_layer_reference, localize
b = Bundle.open(sys.argv[1])
ref = load_golden(b)
report = run_parity(b, ref, targets=[Target("cpu")], batch_sizes=(7,))
(found,) = localize(b, report.rows, golden_layer_reference(b), reference=ref)
print(found.first_divergent.tensor.node, found.first_divergent.module)
"""
    result = run_python_without_torch(code, [str(layered_copy)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [conv_nodes(layered_copy)["conv4.weight"], "conv4", "(Conv2d)"]


def test_altered_golden_layers_are_refused(layered_copy):
    data = bytearray((layered_copy / GOLDEN_LAYERS).read_bytes())
    data[-100] ^= 1
    (layered_copy / GOLDEN_LAYERS).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"golden_layers\.npz"):
        golden_layer_reference(Bundle.open(layered_copy))


def test_the_plot_is_a_png(layered_copy):
    from onnxedge.runtime.parity.localize_plot import render_png

    scale_weight(layered_copy, "conv3.weight", 1.01)
    _, found = parity_and_localize(layered_copy)
    assert render_png(found).startswith(b"\x89PNG\r\n\x1a\n")


def test_an_openvino_row_is_localized(layered_copy):
    pytest.importorskip("openvino")
    from onnxedge.runtime.parity import make_targets

    scale_weight(layered_copy, "conv3.weight", 1.01)
    opened = Bundle.open(layered_copy)
    reference = load_golden(opened)
    targets = make_targets(["cpu"], engines=["openvino"], precisions=["f32"])
    report = run_parity(opened, reference, targets=targets, batch_sizes=(7,))
    (found,) = localize(opened, report.rows, golden_layer_reference(opened), reference=reference)
    assert found.row.label == "openvino cpu f32"
    assert found.first_divergent.module.name == "conv3", "\n".join(found.lines())
