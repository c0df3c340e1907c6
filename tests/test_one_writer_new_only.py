"""Two runs started together on one new target, without --force: the second to take the lock
fails, instead of both exiting 0 and the first one's result silently replaced (pack, export,
import and data synth all did). What a run finds written meanwhile is judged under the lock."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from onnxedge.runtime.bundle import pack as pack_module
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.bundle.write import BundleWriter
from onnxedge.runtime.cli import main
from onnxedge.runtime.data.synth import MARKER, write_faces
from onnxedge.runtime.data.synth_style import MAX_FACES
from onnxedge.runtime.errors import OnnxEdgeError

MEANWHILE = "exists: another run wrote it while this one worked; give --force to replace it"


def test_a_writer_that_must_not_replace_refuses_what_appeared(tmp_path):
    out = tmp_path / "b"
    with BundleWriter(out) as first:
        first.write_bytes("a.txt", b"first")
    with pytest.raises(OnnxEdgeError, match=MEANWHILE), BundleWriter(out, replace=False):
        pass
    assert (out / "a.txt").read_bytes() == b"first"
    with BundleWriter(out) as again:  # replace=True, the library's default: replaced
        again.write_bytes("a.txt", b"second")
    assert (out / "a.txt").read_bytes() == b"second"


def test_pack_without_force_fails_when_another_pack_wrote_the_target_meanwhile(
    smile_bundle, tmp_path, monkeypatch
):
    out = tmp_path / "copy"
    real = pack_module.golden_files

    def the_other_run_finishes(manifest):  # after pack checked that out is new
        shutil.copytree(smile_bundle, out)
        return real(manifest)

    monkeypatch.setattr(pack_module, "golden_files", the_other_run_finishes)
    result = CliRunner().invoke(main, ["pack", str(smile_bundle), "--out", str(out), "--no-golden"])
    assert result.exit_code == 1, result.output
    assert MEANWHILE in result.output.replace("\n", " ")
    Bundle.open(out)  # the other run's bundle, whole
    forced = CliRunner().invoke(main, ["pack", str(smile_bundle), "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output


def test_data_synth_without_force_does_not_replace_a_set_written_meanwhile(tmp_path):
    out = tmp_path / "faces"
    write_faces(out, count=10, seed=1)  # the other run's set, replaceable with --force
    before = (out / MARKER).read_bytes()
    with pytest.raises(OnnxEdgeError, match=MEANWHILE):
        write_faces(out, count=10, seed=2, replace=False)
    assert (out / MARKER).read_bytes() == before
    write_faces(out, count=10, seed=2)
    assert (out / MARKER).read_bytes() != before


def test_data_synth_is_made_readable_keeps_a_sets_mode_and_leaves_no_temporary(tmp_path):
    umask = os.umask(0o027)  # mkdtemp's 0700 was kept before
    try:
        out = tmp_path / "faces"
        (tmp_path / ".faces.onnxedge-tmp-abcdefgh").mkdir()  # of a run killed outright
        args = ["data", "synth", "--out", str(out), "--count", "10"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert out.stat().st_mode & 0o777 == 0o750  # as mkdir makes it under this umask
        assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]
        out.chmod(0o755)
        again = CliRunner().invoke(main, [*args, "--force", "--seed", "3"])
        assert again.exit_code == 0, again.output
        assert out.stat().st_mode & 0o777 == 0o755  # the set it replaced had this mode
        assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]
    finally:
        os.umask(umask)


def test_data_synth_refuses_to_replace_a_set_of_another_user(tmp_path, monkeypatch):
    """The new set would take the old one's owner, which this user cannot give (and the old set,
    swapped aside, could not be removed): refused before anything is drawn."""
    out = tmp_path / "faces"
    write_faces(out, count=10, seed=1)
    before = (out / MARKER).read_bytes()
    monkeypatch.setattr(os, "geteuid", lambda: out.stat().st_uid + 1)
    with pytest.raises(OnnxEdgeError, match=r"belongs to another user .* the new set would not"):
        write_faces(out, count=10, seed=2)
    assert (out / MARKER).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]


def test_data_synth_count_is_bounded(tmp_path):
    out = tmp_path / "faces"
    args = ["data", "synth", "--out", str(out), "--count", str(MAX_FACES + 1)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"expected a number 10 to {MAX_FACES}, found" in result.output.replace("\n", " ")
    with pytest.raises(OnnxEdgeError, match=r"--count: expected 10 .* to 1,000,000 faces"):
        write_faces(out, count=MAX_FACES + 1)
    assert not Path(out).exists()
