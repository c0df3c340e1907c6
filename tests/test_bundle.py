"""Artifacts are written atomically: readers see the old file or the new one, never a part."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from onnxedge.runtime import bundle as bundle_mod
from onnxedge.runtime.bundle import Bundle, BundleWriter, atomic_write_bytes
from onnxedge.runtime.errors import BundleError, OnnxEdgeError


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "report.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["report.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_mod.os, "replace", broken_replace)
    with pytest.raises(OnnxEdgeError, match=r"cannot write .*report.json: No space left on device"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_atomic_write_into_a_file_path_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OnnxEdgeError, match="cannot write"):
        atomic_write_bytes(blocker / "report.json", b"data")


MINIMAL = {
    "input": {"name": "input", "shape": ["batch", 3, 64, 64], "dtype": "float32"},
    "output": {"name": "prob", "shape": ["batch", 1], "dtype": "float32"},
    "labels": {"threshold": 0.5},
    "preprocessing": {"resize": [64, 64]},
}


def test_bundle_is_complete_only_with_its_manifest(tmp_path):
    out = tmp_path / "b"
    with BundleWriter(out) as writer:
        writer.manifest.update(MINIMAL)
        writer.write_bytes("model.onnx", b"model bytes")
        assert not out.exists()  # built under a temporary name until the end
        assert not (writer.tmp_dir / "manifest.json").exists()
    bundle = Bundle.open(out)
    assert bundle.manifest["files"]["model.onnx"]["bytes"] == len(b"model bytes")
    assert bundle.input.name == "input" and bundle.input.shape == ("batch", 3, 64, 64)
    assert bundle.output.describe() == "float32 array of shape [N, 1]"
    assert bundle.threshold == 0.5


@pytest.mark.parametrize(
    "manifest,message",
    [
        (None, "manifest.json is missing"),
        ("{not json", "cannot read"),
        ('{"format": "other"}', "expected format 'onnxedge-bundle', found 'other'"),
        ('{"format": "onnxedge-bundle", "format_version": 9}', "expected format_version 1"),
    ],
)
def test_bundle_open_refuses_bad_manifests(tmp_path, manifest, message):
    (tmp_path / "model.onnx").write_bytes(b"x")
    if manifest is not None:
        (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(BundleError, match=message):
        Bundle.open(tmp_path)


def test_bundle_open_refuses_a_changed_file(tmp_path):
    out = tmp_path / "b"
    with BundleWriter(out) as writer:
        writer.manifest.update(MINIMAL)
        writer.write_bytes("model.onnx", b"model bytes")
    (out / "model.onnx").write_bytes(b"model bytez")
    with pytest.raises(BundleError, match="does not match the manifest"):
        Bundle.open(out)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"files": ["model.onnx"]}, "expected 'files' mapping each file to its sha256"),
        ({"files": {"model.onnx": {"bytes": 3}}}, r"files\['model.onnx'\]: expected a sha256"),
        ({"labels": {"threshold": "high"}}, "expected labels with a threshold in"),
        ({"labels": None}, "expected labels with a threshold in"),
        ({"input": "x"}, "the manifest's 'input' block: expected name, shape and dtype"),
        ({"output": {"name": "prob", "shape": ["N", 0], "dtype": "float32"}}, "'output' block"),
        ({"preprocessing": {"resize": [64]}}, r"expected preprocessing with resize as \[height"),
        ({"preprocessing": {"resize": [64, 64], "std": [1, 0, 1]}}, "std without zeros"),
        ({"preprocessing": None}, "expected preprocessing with a mapping"),
    ],
)
def test_bundle_open_refuses_a_malformed_manifest(smile_bundle, tmp_path, change, message):
    import json
    import shutil

    copy = Path(shutil.copytree(smile_bundle, tmp_path / "b"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(change)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        Bundle.open(copy)


def test_atomic_write_onto_a_directory_is_a_user_error(tmp_path):
    with pytest.raises(OnnxEdgeError, match="expected a file name, found a directory"):
        atomic_write_bytes(tmp_path, b"data")
