"""What an error says it found where it expected a file: not "nothing" for a directory, a named
pipe or a loop of links; an empty file and a file that parses as an empty ModelProto are not
models (`inspect` showed "ops 0 nodes" and exited 0); pack's --out inside its own bundle, or on
a file, says so."""

from __future__ import annotations

import os

import pytest
from cli_assertions import assert_one_line_error
from click.testing import CliRunner

from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import found_at


def test_found_at_names_what_is_there(tmp_path):
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "dangling").symlink_to(tmp_path / "absent")
    (tmp_path / "file").write_bytes(b"x")
    assert found_at(tmp_path / "absent") == f"nothing at {tmp_path / 'absent'}"
    assert found_at(tmp_path / "file" / "below") == f"nothing at {tmp_path / 'file' / 'below'}"
    assert found_at(tmp_path / "dir") == f"a directory at {tmp_path / 'dir'}"
    assert found_at(tmp_path / "fifo") == f"a named pipe at {tmp_path / 'fifo'}"
    assert found_at(tmp_path / "loop1") == f"a loop of symbolic links at {tmp_path / 'loop1'}"
    assert (
        found_at(tmp_path / "dangling") == f"a symbolic link to nothing at {tmp_path / 'dangling'}"
    )
    assert found_at(tmp_path / "file") == f"a file at {tmp_path / 'file'}"
    assert found_at("/dev/null") == "a device at /dev/null"


@pytest.mark.parametrize("command", ["check", "inspect"])
def test_what_is_not_a_model_file_is_named(tmp_path, command):
    os.mkfifo(tmp_path / "pipe.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "blank.onnx").write_bytes(b"\x08\x07")  # ir_version 7 and nothing else
    (tmp_path / "hollow.onnx").write_bytes(b"\x08\x07\x3a\x00")  # and an empty graph
    for name, found in [
        ("hollow.onnx", "is not an ONNX model: it parses, but holds no graph"),
        ("pipe.onnx", "expected an ONNX file, found a named pipe at"),
        ("empty.onnx", "expected an ONNX file, found an empty file at"),
        ("blank.onnx", "is not an ONNX model: it parses, but holds no graph"),
    ]:
        result = CliRunner().invoke(main, [command, str(tmp_path / name)])
        assert_one_line_error(result, found)


def test_pack_into_its_own_bundle_or_onto_a_file_is_refused(smile_bundle, bundle_copy, tmp_path):
    inside = CliRunner().invoke(main, ["pack", str(bundle_copy), "--out", str(bundle_copy / "d")])
    assert_one_line_error(inside, "expected a directory outside the bundle")
    assert not (bundle_copy / "d").exists()
    (tmp_path / "x.jpg").write_bytes(b"a photo")
    onto = CliRunner().invoke(main, ["pack", str(smile_bundle), "--out", str(tmp_path / "x.jpg")])
    assert_one_line_error(onto, f"expected a new or empty directory, found a file at {tmp_path}")
    assert (tmp_path / "x.jpg").read_bytes() == b"a photo"


def test_a_path_outside_utf8_is_shown_as_predict_shows_it(tmp_path):
    """A name's bytes outside UTF-8 printed as Python's surrogate escape (``\\udcff``)."""

    name = os.fsdecode(b"no\xffthere.onnx")
    result = CliRunner().invoke(main, ["check", str(tmp_path / name)])
    assert_one_line_error(result, f"found nothing at {tmp_path}/no\\377there.onnx")
    assert "\\udcff" not in result.output
