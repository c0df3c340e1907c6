"""Untrusted JSON has limits: a manifest, a reference file's metadata, a checkpoint's metadata or a
targets file nested past the limit, or larger than it, is one line, never a RecursionError."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_bundle import write_tiny_bundle

from onnxedge.runtime.bench.targets import TargetError, read_targets_file
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import BundleError
from onnxedge.runtime.jsonlimits import MAX_DEPTH, load_json, nesting_depth

DEEP = "[" * 5000 + "]" * 5000


def test_the_depth_counts_brackets_outside_strings_only():
    assert nesting_depth(b'{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert nesting_depth(b'"\\"[["') == 0
    assert nesting_depth(DEEP.encode()) == 5000


def test_json_at_the_limit_is_read_and_past_it_is_one_line():
    at_limit = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert load_json(at_limit, "x") == json.loads(at_limit)
    with pytest.raises(
        BundleError, match=r"^x: expected JSON nested at most 64 levels deep, found 65$"
    ):
        load_json("[" + at_limit + "]", "x")
    with pytest.raises(BundleError, match=r"^x: expected JSON of at most 10 bytes, found 11$"):
        load_json(b"[" * 11, "x", max_bytes=10)


def test_a_deep_manifest_is_one_line_in_every_reader(tmp_path):
    out = write_tiny_bundle(tmp_path / "b")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["extra"] = json.loads("[" * 60 + "]" * 60)  # deep, but within the limit
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert Bundle.open(out)
    (out / "manifest.json").write_text(json.dumps(manifest)[:-1] + ', "deep": ' + DEEP + "}")
    with pytest.raises(BundleError, match=r"nested at most 64 levels deep, found 5001"):
        Bundle.open(out)
    result = CliRunner().invoke(main, ["check", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [
        f"onnxedge: error: {out / 'manifest.json'}: expected JSON nested at most 64 levels deep, "
        "found 5001"
    ]


def test_a_deep_targets_file_is_one_line(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("a = " + DEEP + "\n")
    with pytest.raises(TargetError, match=r"t.toml: expected TOML nested a few levels deep"):
        read_targets_file(path)
    path.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(TargetError, match=r"expected a targets file of at most 1,048,576 bytes"):
        read_targets_file(path)
