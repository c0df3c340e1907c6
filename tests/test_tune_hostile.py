"""A tuning file, a pack and an inspect given what a user or another program may leave (audit of
2026-12-07): a setup the engines cannot run is a reason to ignore the file, read when the file
is read (a thread count over 1024 was a traceback, a precision onnxruntime lacks a usage error
the user never caused); a tuning file that is a pipe or a device is refused before it is read;
a report or a tuning file never lands on a bundle's own files; pack copies the bytes it
verified; inspect does not call a bundle whole with a listed file missing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.tune.file import read_tuning
from onnxedge.runtime.tune.setup import FilesSetup, TunedSetup

SETUP = {"variant": "fp32", "engine": "onnxruntime", "precision": "f32", "threads": 1}
FILES = {**SETUP, "pool": "threads", "workers": 2, "decode": "exact"}
del FILES["threads"]


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threads": 1025}, "expected threads from 1 to 1024, got 1025"),
        ({"threads": 10**9}, "expected threads from 1 to 1024"),
        ({"precision": "bogus"}, "expected a precision onnxruntime runs, found 'bogus'"),
        ({"precision": "bf16"}, "expected a precision onnxruntime runs, found 'bf16'"),
    ],
)
def test_a_setup_the_engines_cannot_run_is_refused_when_read(change, message):
    with pytest.raises(OnnxEdgeError, match=message):
        TunedSetup.from_dict({**SETUP, **change})
    assert TunedSetup.from_dict(SETUP).threads == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"workers": 1_000_000}, "expected workers from 1 to"),
        ({"decode": "bogus"}, "expected decode exact or fast, found 'bogus'"),
        ({"precision": "bogus"}, "expected a precision onnxruntime runs"),
    ],
)
def test_a_files_setup_the_pools_cannot_run_is_refused_when_read(change, message):
    with pytest.raises(OnnxEdgeError, match=message):
        FilesSetup.from_dict({**FILES, **change})
    assert FilesSetup.from_dict(FILES).workers == 2


def test_a_tuning_file_that_is_a_pipe_or_a_device_is_refused_unread(tmp_path):
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)  # a read would block for ever
    with pytest.raises(OnnxEdgeError, match="expected a tuning file, found a named pipe at"):
        read_tuning(pipe)
    zeros = tmp_path / "zeros.json"
    zeros.symlink_to("/dev/zero")  # a read would never end
    with pytest.raises(OnnxEdgeError, match="expected a tuning file, found a device at"):
        read_tuning(zeros)


def test_a_number_python_will_not_read_is_one_line(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"format": "onnxedge-tuning", "format_version": ' + "9" * 5000 + "}")
    with pytest.raises(OnnxEdgeError, match="is not JSON a reader takes") as caught:
        read_tuning(path)
    assert "\n" not in str(caught.value)


@pytest.fixture
def bundles(smile_bundle, tmp_path):
    shutil.copytree(smile_bundle, tmp_path / "b")
    shutil.copytree(smile_bundle, tmp_path / "other")
    return tmp_path / "b", tmp_path / "other"


def test_a_report_or_tuning_file_on_another_bundles_files_is_a_usage_error(bundles, tmp_path):
    b, other = bundles
    before = (other / "manifest.json").read_bytes(), (other / "model.onnx").read_bytes()
    packed = invoke("pack", b, "--out", tmp_path / "p", "--json", other / "manifest.json")
    assert packed.exit_code == 2 and "expected a file outside a bundle's own files" in (
        packed.output
    )
    tuned = invoke(
        "tune", b, "--seconds", "0.05", "--batch-sizes", "1", "--out", other / "model.onnx"
    )
    assert tuned.exit_code == 2 and "found model.onnx of the bundle" in tuned.output
    marked = invoke("bench", b, "--peers", "none", "--markdown", other / "manifest.json")
    assert marked.exit_code == 2 and "found manifest.json of the bundle" in marked.output
    assert ((other / "manifest.json").read_bytes(), (other / "model.onnx").read_bytes()) == before
    inside = invoke("pack", b, "--out", tmp_path / "p", "--json", tmp_path / "p" / "pack.json")
    assert inside.exit_code == 2 and "inside" in inside.output
    assert not (tmp_path / "p").exists()


def test_pack_copies_the_bytes_it_verified(bundles, tmp_path, monkeypatch):
    b, _ = bundles
    read = []
    original = Bundle.read_bytes

    def spy(self, name):
        read.append(name)
        return original(self, name)

    monkeypatch.setattr(Bundle, "read_bytes", spy)
    result = invoke("pack", b, "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    listed = json.loads((b / "manifest.json").read_text())["files"]
    assert set(listed) <= set(read)


def test_inspect_refuses_a_listed_file_that_is_not_there(bundles):
    b, _ = bundles
    listed = json.loads((b / "manifest.json").read_text())["files"]
    name = next(n for n in listed if n.startswith("golden"))
    (b / name).unlink()
    (b / name).mkdir()
    result = invoke("inspect", b)
    assert result.exit_code == 1
    assert f"lists {name}: expected a file, found a directory at" in result.output


def test_the_deprecated_engine_option_with_tuned_is_named_as_typed(bundles):
    b, _ = bundles
    Path(f"{b}.tuning.json").write_text("{}")
    for typed in ("--engine", "--engines"):
        result = invoke("predict", b, b / "x.png", typed, "openvino", "--tuned")
        assert result.exit_code == 2, result.output
        assert result.output.rstrip().endswith(f"drop {typed}"), result.output


def test_a_tuning_files_types_are_read_strictly_and_its_values_cut_in_the_warning(bundles):
    from onnxedge.runtime.tune.choice import REASON_CHARS, resolve_tuned
    from onnxedge.runtime.tune.file import TUNING_FORMAT, TUNING_FORMAT_VERSION

    b, _ = bundles
    path = b.parent / "t.json"
    base = {"format": TUNING_FORMAT, "format_version": TUNING_FORMAT_VERSION}
    for version in (True, 1.0):
        path.write_text(json.dumps({**base, "format_version": version}))
        with pytest.raises(OnnxEdgeError, match="expected format_version"):
            read_tuning(path)
    for key in (" 32 ", "3_2", "\u0663\u0662"):
        winners = {key: SETUP}
        path.write_text(json.dumps({**base, "bundle": {"manifest_sha256": "x"}, "machine": {},
                                    "winners": winners}))  # fmt: skip
        with pytest.raises(OnnxEdgeError, match="expected batch sizes >= 1"):
            read_tuning(path)
    path.write_text(json.dumps({"format": "x" * 100_000}))
    choice = resolve_tuned(Bundle.open(b), str(path), 1)
    assert not choice.setup and len(choice.reason) <= len(str(path)) + REASON_CHARS + 3
