"""`--engines openvino` on the device's commands: the Classifier, predict and evaluate give what
they give on ONNX Runtime, and an engine that cannot run is one line, never a result."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_assertions import assert_one_line_error
from click.testing import CliRunner
from openvino_support import requires_openvino
from PIL import Image

from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.cli import main
from onnxedge.runtime.data.evaluate import evaluate_bundle
from onnxedge.runtime.data.synth import write_faces
from onnxedge.runtime.engines import EngineUnavailable
from onnxedge.runtime.engines.openvino import loader
from onnxedge.runtime.errors import OnnxEdgeError


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine_images")
    rng = np.random.default_rng(3)
    for i in range(5):
        pixels = rng.integers(0, 256, (80 + i, 70, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{i}.png")
    return root


def _predict(*args: object):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


@requires_openvino
def test_classifier_on_openvino_matches_onnxruntime(smile_bundle):
    ov = Classifier.from_bundle(smile_bundle, threads=1, engine="openvino")
    ort = Classifier.from_bundle(smile_bundle, provider="cpu", threads=1)
    assert ov.provider == "openvino CPU f32 (LATENCY, 1 threads)"
    x = np.random.default_rng(0).random((37, 3, 64, 64), dtype=np.float32)
    # chunks of 8 leave a last chunk of 5: the dynamic batch on OpenVINO
    np.testing.assert_allclose(
        ov.probabilities(x, batch_size=8), ort.probabilities(x), atol=1e-6, rtol=1e-5
    )


@requires_openvino
def test_classifier_bf16_is_asked_for_and_reported(smile_bundle):
    if loader.unavailable_reason(loader.OpenVinoConfig(precision="bf16")):
        pytest.skip("this CPU cannot run OpenVINO in bf16")
    clf = Classifier.from_bundle(smile_bundle, engine="openvino", precision="bf16", threads=1)
    assert "bf16" in clf.provider


def test_classifier_refuses_bad_engine_arguments_before_reading_the_bundle(tmp_path):
    missing = tmp_path / "nothing"
    with pytest.raises(OnnxEdgeError, match="unknown engine 'tvm'"):
        Classifier.from_bundle(missing, engine="tvm")
    with pytest.raises(OnnxEdgeError, match="precision 'bf16' is an OpenVINO setting"):
        Classifier.from_bundle(missing, precision="bf16")


def test_classifier_without_openvino_says_how_to_install(no_openvino, smile_bundle):
    with pytest.raises(EngineUnavailable, match=r"pip install 'onnxedge\[openvino\]'"):
        Classifier.from_bundle(smile_bundle, engine="openvino")


@requires_openvino
def test_predict_on_openvino_gives_onnxruntimes_lines(smile_bundle, images):
    ort = _predict(smile_bundle, images, "--providers", "cpu", "--json")
    ov = _predict(smile_bundle, images, "--engines", "openvino", "--json")
    assert ort.exit_code == ov.exit_code == 0, ov.output
    a = [json.loads(line) for line in ort.stdout.splitlines()]
    b = [json.loads(line) for line in ov.stdout.splitlines()]
    assert [r["file"] for r in a] == [r["file"] for r in b] and len(a) == 5
    assert [r["label"] for r in a] == [r["label"] for r in b]
    np.testing.assert_allclose(
        [r["probability"] for r in b], [r["probability"] for r in a], atol=1e-6
    )
    assert "(openvino CPU f32" in ov.stderr


def test_predict_without_openvino_is_one_line(no_openvino, smile_bundle, images):
    result = _predict(smile_bundle, images, "--engines", "openvino")
    assert_one_line_error(result, "the openvino engine is not installed here")
    assert result.stdout == ""


def test_predict_precision_is_for_openvino(smile_bundle, images):
    result = _predict(smile_bundle, images, "--precision", "bf16")
    assert result.exit_code == 2
    assert "--precision bf16 is OpenVINO's inference precision" in result.output


@requires_openvino
def test_predict_openvino_on_cuda_is_an_error(smile_bundle, images):
    result = _predict(smile_bundle, images, "--engines", "openvino", "--providers", "cuda")
    assert_one_line_error(result, "the openvino engine runs on the CPU")


@requires_openvino
def test_evaluate_on_openvino_gives_the_same_metrics(smile_bundle, tmp_path, monkeypatch):
    from onnxedge.runtime.classifier import decode, loader

    for module in (loader, decode):  # decoder processes, two batches at once
        monkeypatch.setattr(module, "usable_cpus", lambda: 2)
    root = write_faces(tmp_path / "faces", count=40, seed=7, workers=1).out
    ort = evaluate_bundle(smile_bundle, root, split="test", provider="cpu")
    # batches of 2: more than one, so not the threads of a run of one batch
    ov = evaluate_bundle(smile_bundle, root, split="test", engine="openvino", batch_size=2)
    assert ov.provider.startswith("openvino CPU f32 (LATENCY, ")
    # the batches ran on the streams compile, and the result says so
    assert "; 2 batches at once on openvino CPU f32 (THROUGHPUT, " in ov.provider
    assert (ov.accuracy, ov.confusion, ov.roc_auc) == (ort.accuracy, ort.confusion, ort.roc_auc)
    assert ov.evaluated == ort.evaluated > 0


@requires_openvino
def test_evaluate_command_takes_the_engine(smile_bundle, tmp_path):
    root = write_faces(tmp_path / "faces", count=40, seed=7, workers=1).out
    args = ["evaluate", str(smile_bundle), "--data", str(root), "--no-progress"]
    ort = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "a.json")])
    ov = CliRunner().invoke(
        main, [*args, "--engines", "openvino", "--json", str(tmp_path / "b.json")]
    )
    assert ort.exit_code == ov.exit_code == 0, ov.output
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert b["provider"].startswith("openvino CPU f32")
    assert (a["accuracy"], a["confusion"]) == (b["accuracy"], b["confusion"])
    bad = CliRunner().invoke(main, [*args, "--precision", "bf16"])
    assert bad.exit_code == 2 and "--precision bf16 is OpenVINO's" in bad.output


@requires_openvino
def test_openvino_runs_where_torch_cannot_be_imported(smile_bundle, images):
    """The device has no torch: openvino must not need it (nor the export side)."""
    from torchless import run_without_torch

    result = run_without_torch(["predict", smile_bundle, images, "--engines", "openvino"])
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5
    parity = run_without_torch(
        ["parity", smile_bundle, "--engines", "openvino", "--batch-sizes", "2"]
    )
    assert parity.returncode == 0, parity.stdout + parity.stderr
    assert "PASSED | openvino cpu f32 | batch 2" in parity.stdout
