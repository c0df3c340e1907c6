"""Variants judged as variants (`onnxedge.runtime.parity.variant_judge`): an int8 or fp16 model is
held to its gate's figures against the float64 reference, not to fp32's rounding; a healthy one
that passed its gate passes, a broken one fails; and `--localize --against fp32` ranks the layers
by their share of the error (`onnxedge.runtime.parity.error_share`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_assertions import unwrap
from click.testing import CliRunner

from onnxedge.runtime.bundle.hashing import sha256_file
from onnxedge.runtime.cli import main
from onnxedge.runtime.parity.error_share import error_shares
from onnxedge.runtime.parity.exposed import ExposedTensor
from onnxedge.runtime.parity.layer_compare import LayerResult
from onnxedge.runtime.parity.tolerances import Tolerance
from onnxedge.runtime.parity.variant_judge import (
    FAR_FROM_THRESHOLD,
    MARGIN,
    VariantBounds,
    judge_variant,
)
from onnxedge.runtime.variants.manifest import read_variants

CPU_GUARD = Tolerance(1e-5, 1e-4)


def entry(precision="int8", gate=None, name="int8"):
    block = {"file": "v.onnx", "format": "onnx", "precision": precision, "gated": True}
    if gate is not None:
        block["gate"] = gate
    return read_variants({"variants": {name: block}}, "m", {"v.onnx": {}})[name]


GATE = {
    "criteria": {"min_agreement": 0.995, "max_accuracy_drop_pp": 0.5},
    "max_prob_error": 0.05,
    "p99_prob_error": 0.03,
    "images": 600,
    "provider": "CPUExecutionProvider",
}


def test_bounds_come_from_the_gate_and_fp32_precisions_are_judged_as_fp32():
    bounds = VariantBounds.of(entry(gate=GATE))
    assert bounds is not None and bounds.gate_bound == pytest.approx(MARGIN * 0.05)
    assert bounds.min_agreement == 0.995
    assert "gate |Δp| max 0.05 (600 images, CPUExecutionProvider)" in bounds.describe()
    assert VariantBounds.of(entry(gate=None)) is None  # no figures: judged as fp32
    assert VariantBounds.of(entry("fp32", GATE, "fp32-ort")) is None
    assert VariantBounds.of(None) is None
    assert VariantBounds.of(entry(gate={**GATE, "max_prob_error": "inf"})) is None


def rows(*pairs):
    """(reference, variant) probabilities, one row each; kinds: image rows."""
    ref = np.array([[p] for p, _ in pairs])
    got = np.array([[q] for _, q in pairs])
    return ref, got


def judge(ref, got, kinds=None, gate=GATE):
    kinds = kinds or [f"image:{i}.jpg" for i in range(len(ref))]
    bounds = VariantBounds.of(entry(gate=gate))
    return judge_variant(bounds, got, ref, kinds, fp32_guard=CPU_GUARD, threshold=0.5)


def test_a_variant_within_its_bound_passes_and_one_beyond_it_fails():
    ref, got = rows((0.1, 0.12), (0.9, 0.85), (0.7, 0.79))
    verdict = judge(ref, got)
    assert not verdict.failures and verdict.decided_by == "gate"
    assert verdict.prob_check.ratio == pytest.approx(0.09 / 0.1)
    ref, got = rows((0.1, 0.12), (0.9, 0.75))
    verdict = judge(ref, got)
    assert (
        verdict.failures
        and "prob outside the variant's bound 0.1 in rows 1" in (verdict.failures[0])
    )


def test_a_flip_near_the_threshold_is_no_failure_and_one_far_from_it_is():
    ref, got = rows((0.48, 0.52), (0.9, 0.9))
    assert not judge(ref, got).failures  # within the bound of 0.5: may go either way
    # a flip of an image row beyond the bound fails both criteria, and labels decide
    ref, got = rows((0.3, 0.6), (0.9, 0.9))
    verdict = judge(ref, got)
    assert verdict.decided_by == "labels"
    assert any(
        "labels of 50.0% of the images agree < the gate's 99.50%" in f for f in verdict.failures
    )


def test_synthetic_rows_fail_only_on_a_confident_answer_turned_over():
    kinds = ["zeros", "random", "image:a.jpg"]
    # the synthetic rows far off (an int8 clips inputs it was not calibrated on), labels kept
    ref, got = rows((0.05, 0.4), (0.95, 0.6), (0.8, 0.81))
    verdict = judge(ref, got, kinds)
    assert not verdict.failures and verdict.image_rows == 1
    assert verdict.max_error_by_kind == pytest.approx(
        {"structured": 0.35, "random": 0.35, "image": 0.01}
    )
    # a confident synthetic answer turned over fails
    ref, got = rows((0.5 - FAR_FROM_THRESHOLD - 0.01, 0.9), (0.95, 0.6), (0.8, 0.8))
    verdict = judge(ref, got, kinds)
    assert verdict.synthetic_flips == (0,)
    assert "a confident label turned over" in verdict.failures[0]
    assert "in rows 0 (zeros)" in verdict.failures[0]


def test_without_real_images_the_labels_alone_judge_and_the_row_says_so():
    ref, got = rows((0.05, 0.3), (0.95, 0.7))
    verdict = judge(ref, got, ["zeros", "ones"])
    assert verdict.prob_check is None and not verdict.failures
    assert verdict.decided_by == "labels only"


def test_a_variant_is_never_held_tighter_than_fp32():
    tiny = {**GATE, "max_prob_error": 0.0}  # a gate that measured no error at all
    ref, got = rows((0.5, 0.500004))
    verdict = judge(ref, got, gate=tiny)
    assert not verdict.failures and verdict.decided_by == "fp32"


# --- error shares ------------------------------------------------------------------------------


def layer(name, index, scaled, inputs=(), compared=True):
    tensor = ExposedTensor(name, f"n_{name}", "Conv", index, index, tuple(inputs))
    return LayerResult(
        tensor, None, "passed" if compared else "no reference", 0.0, scaled_error=scaled
    )


def test_each_layer_is_ranked_by_the_error_it_adds():
    """conv1 0.1; its DQ (no reference) passed to conv2, which adds 0.3; a pool that averages
    the error down adds nothing; conv3 after it adds 0.05."""
    layers = [
        layer("conv1", 1, 0.1, ["input", "w1"]),
        layer("q1", 2, 0.0, ["conv1"], compared=False),
        layer("conv2", 3, 0.4, ["q1", "w2"]),
        layer("pool", 4, 0.2, ["conv2"]),
        layer("conv3", 5, 0.25, ["pool"]),
    ]
    shares = error_shares(layers)
    assert [s.layer.tensor.name for s in shares] == ["conv2", "conv1", "conv3", "pool"]
    by_name = {s.layer.tensor.name: s for s in shares}
    assert by_name["conv2"].added == pytest.approx(0.3)
    assert by_name["conv2"].sources == ("conv1",)  # through the tensor with no reference
    assert by_name["pool"].added == 0.0
    assert by_name["conv2"].share == pytest.approx(0.3 / 0.45)
    assert sum(s.share for s in shares) == pytest.approx(1.0)


# --- a gated int8 and fp16 of a trained bundle, healthy and broken --------------------------------


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def gated_edge(tmp_path_factory) -> Path:
    """The hand-set brightness model (tests/test_optimize.py) exported with real images in its
    golden data, and its int8 and fp16 variants made and gated by `onnxedge optimize`."""
    pytest.importorskip("torch")
    from safetensors.torch import save_file
    from test_optimize import brightness_state_dict, write_data

    from onnxedge.export.pipeline import ExportRequest, export_model

    root = tmp_path_factory.mktemp("gated")
    data = write_data(root / "flat")
    checkpoint = root / "brightness.safetensors"
    save_file(brightness_state_dict(), str(checkpoint))
    trained = root / "bundle"
    export_model(ExportRequest(out=trained, checkpoint=checkpoint, images=data / "test"))
    edge = root / "edge"
    result = invoke(
        "optimize", trained, "--data", data, "--out", edge, "--int8", "--fp16",
        "--calibration-size", 16,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return edge


def parity(bundle, *args):
    report = bundle.parent / "parity.json"
    result = invoke(
        "parity", bundle, "--providers", "cpu", "--batch-sizes", "7,64", "--json", report, *args
    )
    return result, json.loads(report.read_text()) if report.exists() else None


def test_a_gated_int8_passes_as_a_variant(gated_edge):
    result, payload = parity(gated_edge, "--variant", "int8")
    assert result.exit_code == 0, result.output
    rows = {r["batch"]: r for r in payload["rows"]}
    judged = rows[64]["variant_judge"]
    assert judged["image_rows"] > 0 and judged["decided_by"] in ("gate", "fp32")
    assert judged["bounds"]["gate_bound"] == pytest.approx(MARGIN * judged["bounds"]["gate_max"])
    assert "images" in unwrap(result.output) and "PASSED | cpu | batch 64" in result.output


def copy_bundle(src: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(src, dst))


def replace_variant(bundle: Path, name: str, model: onnx.ModelProto) -> None:
    """Write ``model`` as the variant's file, its sha256 in the manifest, gate figures kept."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    file = manifest["variants"][name]["file"]
    onnx.save(model, str(bundle / file))
    manifest["files"][file]["sha256"] = sha256_file(bundle / file)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_an_int8_with_one_weight_scale_corrupted_fails(gated_edge, tmp_path):
    """The scale of conv4's int8 weights (output channel 0, the one channel the model uses)
    multiplied by 4: the model still runs and is still "int8", but no longer the model."""
    bundle = copy_bundle(gated_edge, tmp_path / "edge")
    model = onnx.load(str(bundle / "variants/int8.onnx"))
    scales = {
        n.input[1]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and "conv4.weight" in n.input[0]
    }
    (name,) = scales
    init = next(i for i in model.graph.initializer if i.name == name)
    values = onnx.numpy_helper.to_array(init).copy()
    values[0] *= 4
    init.CopyFrom(onnx.numpy_helper.from_array(values, name))
    replace_variant(bundle, "int8", model)
    result, payload = parity(bundle, "--variant", "int8")
    assert result.exit_code == 1, result.output
    row = {r["batch"]: r for r in payload["rows"]}[64]
    assert row["status"] == "failed" and row["variant_judge"]["failures"]


def test_an_int8_of_another_model_fails(gated_edge, tmp_path):
    """The int8 file replaced by an int8 of the same network with other weights (every
    brightness weight negated: the model answers the opposite), under the same gate figures."""
    bundle = copy_bundle(gated_edge, tmp_path / "edge")
    model = onnx.load(str(bundle / "variants/int8.onnx"))
    for init in model.graph.initializer:
        if init.name.startswith("fc.") or "fc.weight" in init.name:
            values = onnx.numpy_helper.to_array(init)
            if values.dtype.kind == "f":
                init.CopyFrom(onnx.numpy_helper.from_array(-values, init.name))
    replace_variant(bundle, "int8", model)
    result, payload = parity(bundle, "--variant", "int8")
    assert result.exit_code == 1, result.output
    assert "labels" in payload["rows"][-1]["reason"]


def test_fp16_is_judged_as_a_variant_and_fails_when_broken(gated_edge, tmp_path):
    """fp16 is made for the CUDA EP: its CPU rows are SKIPPED (`provider_for`, as predict). Its
    gate ran on the CPU EP here (no CUDA EP), so listed for the CPU it runs there and is judged
    by that gate: it passes; with conv4's float16 weights scaled by 4 it fails."""
    _, payload = parity(gated_edge, "--variant", "fp16")
    assert {r["status"] for r in payload["rows"]} == {"skipped"}
    bundle = copy_bundle(gated_edge, tmp_path / "edge")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["variants"]["fp16"]["gate"]["provider"] == "CPUExecutionProvider"
    manifest["variants"]["fp16"]["providers"] = ["cpu"]
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    result, payload = parity(bundle, "--variant", "fp16")
    assert result.exit_code == 0, result.output
    assert all(r["variant_judge"]["bounds"]["precision"] == "fp16" for r in payload["rows"])
    model = onnx.load(str(bundle / "variants/fp16.onnx"))
    init = next(i for i in model.graph.initializer if "conv4" in i.name and "weight" in i.name)
    values = onnx.numpy_helper.to_array(init)
    init.CopyFrom(onnx.numpy_helper.from_array((values * 4).astype(values.dtype), init.name))
    replace_variant(bundle, "fp16", model)
    result, payload = parity(bundle, "--variant", "fp16")
    assert result.exit_code == 1, result.output


def test_localize_against_fp32_ranks_the_layers_by_their_share(gated_edge):
    result, payload = parity(
        gated_edge, "--variant", "int8", "--localize", "always", "--against", "fp32"
    )
    assert result.exit_code == 0, result.output
    found = payload["localization"][-1]
    ranking = found["ranking"]
    assert ranking and sum(r["share"] for r in ranking) == pytest.approx(1.0)
    assert [r["share"] for r in ranking] == sorted((r["share"] for r in ranking), reverse=True)
    assert "largest share of the error: " in unwrap(result.output)
    assert "added" in result.output and "share" in result.output


def test_inspect_lists_the_variants_their_gates_and_the_golden_data(gated_edge):
    result = CliRunner().invoke(main, ["inspect", str(gated_edge), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["bundle"]
    manifest = json.loads((gated_edge / "manifest.json").read_text())
    assert set(found["variants"]) == set(manifest["variants"]) == {"int8", "fp16"}
    for name, variant in found["variants"].items():
        gate = manifest["variants"][name]["gate"]
        assert variant["entry"]["gate"] == gate and variant["gated"] is True
        text = result.stderr.replace("\n          ", " ")  # long lines wrap under their label
        line = next(x for x in text.splitlines() if x.startswith(f"variant   {name}:"))
        short = gate["provider"].removesuffix("ExecutionProvider")
        assert f"gate PASSED on {gate['images']} images ({short})" in line
        assert f"agreement {100 * gate['label_agreement']:.2f}%" in line
        assert f"|Δp| max {gate['max_prob_error']:.2g}" in line
    golden = manifest["golden"]
    assert found["golden"]["batch_sizes"] == golden["batch_sizes"]
    assert found["golden"]["images"] == golden["images"] and golden["images"]
    count = len(golden["images"])
    assert f"golden    golden.npz: batch sizes {golden['batch_sizes']}, {count} images (" in (
        result.stderr
    )
    assert set(found["files"]) == set(manifest["files"])
