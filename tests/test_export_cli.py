"""`onnxedge export` writes a complete bundle or nothing; bad input is one line and exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_assertions import assert_one_line_error
from click.testing import CliRunner
from safetensors.torch import save_file

from onnxedge.export import pipeline
from onnxedge.export.pipeline import ExportRequest, export_model
from onnxedge.models import get_model_spec
from onnxedge.models.weights import seeded
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import OnnxEdgeError


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_manifest_records_the_export(smile_bundle):
    manifest = json.loads((smile_bundle / "manifest.json").read_text())
    assert manifest["model"] == "smile_cnn" and manifest["head"] == "avgpool"
    assert manifest["exporter"] == "dynamo" and manifest["opset"] == 18
    assert manifest["input"] == {"name": "input", "shape": ["batch", 3, 64, 64], "dtype": "float32"}
    assert manifest["output"] == {
        "name": "prob",
        "shape": ["batch", 1],
        "dtype": "float32",
        "kind": "sigmoid-probability",
    }
    assert manifest["weights"] == {"source": "seed", "seed": 0}
    assert manifest["preprocessing"]["resize"] == [64, 64]
    assert manifest["check"]["passed"] is True
    assert manifest["graph"]["nodes"].count("GlobalAveragePool") == 1
    assert len(manifest["graph"]["gap_rewrites"]) == 1
    for dist in ("torch", "onnx", "onnxsim", "onnxruntime"):
        assert manifest["versions"][dist]
    Bundle.open(smile_bundle)  # every hash the manifest states holds
    assert len(manifest["files"]["model.onnx"]["sha256"]) == 64


def test_same_inputs_give_a_byte_identical_model(smile_bundle, tmp_path):
    again = export_model(ExportRequest(out=tmp_path / "again"))
    assert (again.out / "model.onnx").read_bytes() == (smile_bundle / "model.onnx").read_bytes()


def test_checkpoint_export_records_provenance(tmp_path):
    model, _ = seeded(get_model_spec("smile_cnn").build, 42)
    ckpt = tmp_path / "smile.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    result = invoke("export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    weights = json.loads((tmp_path / "b" / "manifest.json").read_text())["weights"]
    assert weights["source"] == "checkpoint" and weights["path"] == "smile.safetensors"
    assert weights["format"] == "safetensors" and len(weights["sha256"]) == 64


def test_a_failing_export_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "b"

    def broken(*args, **kwargs):
        raise OnnxEdgeError("simulated failure after the bundle directory was started")

    monkeypatch.setattr(pipeline, "package_versions", broken)
    with pytest.raises(OnnxEdgeError):
        export_model(ExportRequest(out=out))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_failing_export_keeps_the_previous_bundle(bundle_copy, monkeypatch):
    before = (bundle_copy / "model.onnx").read_bytes()
    real_write = pipeline.BundleWriter.write_bytes

    def write_then_fail(self, name, data):
        real_write(self, name, data)
        raise KeyboardInterrupt  # killed midway, after model.onnx was written

    monkeypatch.setattr(pipeline.BundleWriter, "write_bytes", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        export_model(ExportRequest(head="mean", out=bundle_copy))
    assert (bundle_copy / "model.onnx").read_bytes() == before
    Bundle.open(bundle_copy)
    assert [p.name for p in bundle_copy.parent.iterdir()] == [bundle_copy.name]


def test_refuses_to_overwrite_a_directory_that_is_not_a_bundle(tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"...")
    result = invoke("export", "--out", str(precious))
    assert_one_line_error(result, f"{precious} exists", "--force")
    # --force replaces a bundle, never a folder that is not one.
    result = invoke("export", "--out", str(precious), "--force")
    assert_one_line_error(result, "refusing to overwrite", str(precious))
    assert (precious / "holiday.jpg").exists()


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--model", "resnet50"], ["unknown model 'resnet50'", "smile_cnn"]),
        (["--head", "max"], ["unknown head 'max'", "avgpool, adaptive, mean"]),
        (["--head", ""], ["unknown head ''", "avgpool, adaptive, mean"]),  # not the default
        (["--opset", "17"], ["dynamo exporter needs opset >= 18", "--opset 17"]),
        (["--checkpoint", "absent.safetensors"], ["expected a checkpoint file", "absent"]),
    ],
)
def test_bad_export_options(tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    result = invoke("export", *args, "--out", str(tmp_path / "b"))
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "b").exists()


def test_mismatching_checkpoint(tmp_path):
    model, _ = seeded(get_model_spec("smile_cnn").build, 0)
    state = dict(model.state_dict(), **{"fc.weight": torch.zeros(2, 256)})
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    result = invoke(
        "export", "--checkpoint", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "b")
    )
    assert_one_line_error(result, "'fc.weight'", "[1, 256]", "[2, 256]")
    assert not (tmp_path / "b").exists()


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    result = invoke("export", "--out", str(blocker / "bundle"))
    assert_one_line_error(result, "cannot write the bundle", str(blocker / "bundle"))
    assert blocker.read_text() == "a file where a directory should be"


@pytest.mark.parametrize("command", ["check", "simplify"])
def test_a_file_that_is_not_onnx(tmp_path, command):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("this is not a protobuf")
    extra = ["-o", str(tmp_path / "out.onnx")] if command == "simplify" else []
    result = invoke(command, str(bogus), *extra)
    assert_one_line_error(result, "is not an ONNX model", str(bogus))
    assert not (tmp_path / "out.onnx").exists()


def test_usage_errors_exit_2(tmp_path):
    assert invoke("export", "--exporter", "tflite").exit_code == 2
    assert invoke("simplify", str(tmp_path / "x.onnx")).exit_code == 2  # -o missing
    assert invoke("no-such-command").exit_code == 2


def test_real_process_prints_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "onnxedge.runtime", "check", str(tmp_path / "absent.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"onnxedge: error: expected an ONNX file, found nothing at {Path(tmp_path / 'absent.onnx')}"
    ]


def test_out_of_range_seed_is_a_usage_error(tmp_path):
    result = invoke("export", "--seed", "99999999999999999999", "--out", str(tmp_path / "b"))
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_bad_out_is_refused_before_the_export_runs(tmp_path, monkeypatch):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"...")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was exported before --out was checked")

    monkeypatch.setattr(pipeline, "export_module", must_not_run)
    with pytest.raises(OnnxEdgeError, match="refusing to overwrite"):
        export_model(ExportRequest(out=precious))


def test_a_graph_that_fails_the_check_writes_no_bundle(tmp_path, monkeypatch):
    from onnxedge.runtime.check.check import CheckItem, CheckReport

    def failing_check(model, **kwargs):
        return CheckReport("<model>", (CheckItem("gap_head", False, "simulated failure"),))

    from onnxedge.export import lowering  # where the export's graph steps run the check

    monkeypatch.setattr(lowering, "check_model", failing_check)
    with pytest.raises(OnnxEdgeError, match="fails onnxedge check, no bundle written: FAILED"):
        export_model(ExportRequest(out=tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_an_opset_onnx_does_not_know_is_refused_before_the_export(tmp_path, monkeypatch):
    """--opset 99999 ran the whole export and failed at its end."""
    import onnx

    def no_export(*args, **kwargs):
        raise AssertionError("the export ran")

    monkeypatch.setattr(pipeline, "export_bundle", no_export)
    newest = onnx.defs.onnx_opset_version()
    for opset, message in [
        (99999, f"expected an opset from 7 to {newest} (the newest onnx"),
        (newest + 1, f"found {newest + 1}"),
        (3, "expected a number at least 7, found 3"),
    ]:
        args = ["export", "--opset", str(opset), "--out", str(tmp_path / "b")]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert message in result.output
    with pytest.raises(OnnxEdgeError, match=f"expected an opset from 7 to {newest}"):
        pipeline.export_model(pipeline.ExportRequest(out=tmp_path / "b", opset=99999))
    assert not (tmp_path / "b").exists()


def test_a_labels_file_saved_with_a_byte_order_mark_names_its_classes(tmp_path):
    """Windows' Notepad starts a UTF-8 file with a BOM: it stayed in the first class name,
    and evaluate and optimize then refused that class's folder."""
    from onnxedge.export.cli.preprocessing_options import read_labels

    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffcat\r\ndog\r\n".encode())
    assert read_labels(path) == ["cat", "dog"]
