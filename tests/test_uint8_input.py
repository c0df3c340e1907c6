"""`onnxedge optimize --uint8-input` (the preprocessing in the graph: fp32-u8, int8-u8, gated and
recorded as variants) and `--fast-decode` (`--decode fast` gated on the bundle's data and recorded
in the manifest's ``decodes`` block)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_assertions import unwrap
from click.testing import CliRunner

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.classifier.preprocess import load_pixels, normalize
from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.variants.manifest import FP32_U8, INT8, INT8_U8
from onnxedge.runtime.variants.uint8_input import add_uint8_input
from tests.test_optimize import brightness_state_dict, write_data


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_optimize's: a model whose label is the image's brightness, as a trained bundle."""
    from safetensors.torch import save_file

    from onnxedge.export.pipeline import ExportRequest, export_model

    root = tmp_path_factory.mktemp("brightness")
    checkpoint = root / "brightness.safetensors"
    save_file(brightness_state_dict(), str(checkpoint))
    export_model(ExportRequest(out=root / "bundle", checkpoint=checkpoint))
    return root / "bundle"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / "flat")


@pytest.fixture(scope="module")
def pixels_bundle(trained_bundle: Path, data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("u8") / "edge"
    args = ["optimize", trained_bundle, "--data", data, "--out", out, "--int8", "--uint8-input"]
    args += ["--fast-decode", "--calibration-size", 16]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    lines = [line.split(" | ")[:2] for line in unwrap(result.stdout).splitlines()]
    want = [INT8, FP32_U8, INT8_U8, "decode-fast"]
    assert lines == [["PASSED", name] for name in want], result.stdout
    return out


def test_the_variants_take_uint8_nhwc_and_are_recorded(pixels_bundle):
    bundle = Bundle.open(pixels_bundle)
    for name in (FP32_U8, INT8_U8):
        entry = bundle.variants[name]
        assert entry.gated and entry.block["input"] == {
            "name": "input",
            "shape": ["batch", 64, 64, 3],
            "dtype": "uint8",
            "layout": "NHWC",
        }
        model = onnx.load(str(bundle.variant_model(name)))
        first = [n.op_type for n in model.graph.node[:5]]
        assert first == ["Transpose", "Cast", "Mul", "Sub", "Div"], first
    assert bundle.variants[INT8_U8].block["from"] == INT8
    decodes = bundle.manifest["decodes"]["fast"]
    assert decodes["gated"] is True and decodes["gate"]["passed"] is True
    assert decodes["gate"]["criteria"] == {"min_agreement": 0.995, "max_accuracy_drop_pp": 0.5}


def test_the_graph_scales_as_the_host_does(pixels_bundle, data):
    """fp32-u8 on the pixels gives fp32's probabilities on the host-scaled input."""
    paths = sorted((data / "test").rglob("*.png"))
    fp32 = Classifier.from_bundle(pixels_bundle, provider="cpu")
    u8 = Classifier.from_bundle(pixels_bundle, provider="cpu", variant=FP32_U8)
    assert u8.takes_pixels and not fp32.takes_pixels
    pixels = np.stack([load_pixels(p, fp32.preprocessing) for p in paths])
    want = fp32.probabilities(normalize(pixels, fp32.preprocessing))
    np.testing.assert_allclose(u8.probabilities(pixels), want, rtol=0, atol=1e-6)
    files = [r.prediction.probability for r in u8.predict_files(paths, batch_size=5)]
    np.testing.assert_allclose(files, want, rtol=0, atol=1e-6)
    images = [p.probability for p in u8.predict_images(paths)]
    np.testing.assert_allclose(images, want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="expected a uint8 array of shape"):
        u8.predict_array(normalize(pixels, fp32.preprocessing))


def test_fast_decode_on_a_gated_bundle_is_not_warned_about(pixels_bundle, caplog):
    with caplog.at_level("WARNING"):
        Classifier.from_bundle(pixels_bundle, provider="cpu", decode="fast")
    assert "not gated" not in caplog.text


def test_parity_of_a_pixels_variant_is_refused_naming_its_source(pixels_bundle):
    """parity fed the golden data's floats to a model of uint8 pixels: FAILED on every row,
    with "the manifest records no gate figures" beside a passed gate."""
    result = CliRunner().invoke(
        main, ["parity", str(pixels_bundle), "--variant", FP32_U8, "--providers", "cpu"]
    )
    assert result.exit_code == 1, result.output
    assert "takes the decoded uint8 pixels" in result.output
    assert result.output.rstrip().endswith("--variant fp32")


def test_a_resize_mode_that_pads_is_refused(trained_bundle, tmp_path):
    spec = {**Bundle.open(trained_bundle).preprocessing, "resize_mode": "letterbox"}
    with pytest.raises(OnnxEdgeError, match="resize_mode 'letterbox', which pads"):
        add_uint8_input(trained_bundle / "model.onnx", tmp_path / "u8.onnx", spec)


def test_a_fast_decode_that_misses_its_gate_is_not_recorded(
    trained_bundle, data, tmp_path, monkeypatch
):
    """With the fast decode's outputs made to disagree, the gate fails and nothing is written."""
    from onnxedge.runtime.variants import gate_run
    from onnxedge.runtime.variants import optimize as optimize_module
    from onnxedge.runtime.variants.gate import GateCriteria

    request = optimize_module.OptimizeRequest(
        bundle=trained_bundle,
        data=data,
        out=tmp_path / "out",
        int8=False,
        fp16=False,
        ort=False,
        fast_decode=True,
        criteria=GateCriteria(min_agreement=1.0, max_accuracy_drop_pp=0.0),
    )
    real = gate_run.iter_chunks

    def flipped(*args, **kwargs):  # the fast pixels inverted: every label flips
        for chunk in real(*args, **kwargs):
            if kwargs.get("decode") == "fast":
                chunk = type(chunk)(1.0 - chunk.inputs, chunk.labels, chunk.pixels)
            yield chunk

    monkeypatch.setattr(gate_run, "iter_chunks", flipped)
    result = optimize_module.optimize_bundle(request)
    assert not result and result.decode_gate is not None and not result.decode_gate.written
    assert [o.name for o in result.missed] == ["decode-fast"]
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert json.dumps(result.to_dict())  # its figures are reported all the same


def test_bench_of_a_pixels_variant_without_images_is_a_usage_error(tmp_path):
    """Without --images a -u8 variant has no row: alone, a StopIteration traceback; beside
    fp32, silently left out."""
    for variants in ("fp32-u8", "fp32,INT8-u8"):
        result = CliRunner().invoke(main, ["bench", str(tmp_path), "--variants", variants])
        assert result.exit_code == 2, result.output
        assert "expected --images DIR with them, found none" in result.output
