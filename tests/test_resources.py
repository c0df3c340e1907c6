"""Failures of resources are one line: a batch the engine cannot allocate is split until it fits
(and one image that does not fit is one line), a full disk or a full stdout is one line naming
what failed and leaves what was there before, SIGTERM and SIGINT clean up and exit 143 and 130."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_bundle import TINY, write_tiny_bundle

from onnxedge.runtime.bundle.reader import Bundle, BundleWriter, atomic_write_bytes
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.errors import OnnxEdgeError

CLI = [sys.executable, "-m", "onnxedge.runtime"]


class _Greedy:
    """A session that cannot allocate for more than ``fits`` images in one call."""

    def __init__(self, session, fits: int) -> None:
        self.session, self.fits, self.calls = session, fits, []  # every call's batch

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, outputs, feeds):
        (batch,) = feeds.values()
        self.calls.append(len(batch))
        if len(batch) > self.fits:
            raise RuntimeError(
                "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for "
                "requested buffer of size 123456789"
            )
        return self.session.run(outputs, feeds)


def test_a_batch_too_large_for_memory_is_split_until_it_fits(tmp_path):
    clf = Classifier.from_bundle(write_tiny_bundle(tmp_path / "b"), provider="cpu")
    batch = np.random.default_rng(0).random((13, 3, 64, 64), dtype=np.float32)
    expected = [p.probability for p in clf.predict_array(batch, batch_size=13)]
    greedy = clf.session = _Greedy(clf.session, fits=3)
    split = clf.predict_array(batch, batch_size=13)
    assert [p.probability for p in split] == expected  # every row, in order, the same
    assert greedy.calls[0] == 13 and sum(n for n in greedy.calls if n <= 3) == 13


def test_one_image_that_does_not_fit_is_one_line(tmp_path):
    clf = Classifier.from_bundle(write_tiny_bundle(tmp_path / "b"), provider="cpu")
    clf.session = _Greedy(clf.session, fits=0)
    with pytest.raises(OnnxEdgeError, match=r"cannot allocate the memory to run one image"):
        clf.predict_array(np.zeros((4, 3, 64, 64), np.float32))


def test_other_engine_errors_are_not_taken_for_memory(tmp_path):
    clf = Classifier.from_bundle(write_tiny_bundle(tmp_path / "b"), provider="cpu")

    class Broken(_Greedy):
        def run(self, outputs, feeds):
            raise RuntimeError("INVALID_ARGUMENT: something else")

    clf.session = Broken(clf.session, fits=1)
    with pytest.raises(RuntimeError, match="something else"):
        clf.predict_array(np.zeros((4, 3, 64, 64), np.float32))


# -- full disks -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str = "64k"):
    """A tmpfs of ``size`` at ``path``, or a skip where none can be mounted (not root, no
    CAP_SYS_ADMIN); the tests beside these inject the OSError instead."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:80]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_while_writing_a_bundle_is_one_line_and_keeps_the_old(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        out = write_tiny_bundle(disk / "b")
        with pytest.raises(OnnxEdgeError) as e:
            write_tiny_bundle(out, **{"big.bin": os.urandom(200_000)})
        assert "No space left on device" in str(e.value) and "\n" not in str(e.value)
        assert str(out) in str(e.value) and "big.bin" in str(e.value)
        assert Bundle.open(out).read_bytes("model.onnx") == TINY
        assert sorted(p.name for p in disk.iterdir()) == ["b"]


def test_a_full_disk_while_writing_a_report_is_one_line(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        (disk / "r.json").write_bytes(b"old")
        with pytest.raises(OnnxEdgeError, match=r"cannot write .*r.json: No space left"):
            atomic_write_bytes(disk / "r.json", os.urandom(200_000))
        assert (disk / "r.json").read_bytes() == b"old"


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT], ids=errno.errorcode.get
)
def test_an_injected_write_error_is_one_line_naming_the_file(tmp_path, monkeypatch, code):
    out = write_tiny_bundle(tmp_path / "b")

    def failing(self, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_bytes", failing)
    with pytest.raises(OnnxEdgeError) as e, BundleWriter(out) as writer:
        writer.write_bytes("model.onnx", TINY)
    assert str(e.value) == f"cannot write the bundle to {out}: model.onnx: {os.strerror(code)}"
    monkeypatch.undo()
    assert Bundle.open(out) and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def cli(*args: str, stdout=subprocess.PIPE, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300, **kw
    )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_stdout_is_one_line(tmp_path):
    out = write_tiny_bundle(tmp_path / "b")
    with open("/dev/full", "w") as full:
        done = cli("check", str(out), stdout=full)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "onnxedge: error: cannot write the results to standard output: No space left on device"
    ]


# -- signals --------------------------------------------------------------------------------

_COMMAND = """
import time
from pathlib import Path

import click
from test_bundle import write_tiny_bundle

from onnxedge.runtime.bundle import write

real = write.BundleWriter.write_bytes


def slow(self, name, data):
    digest = real(self, name, data)
    print("writing", flush=True)
    time.sleep(60)
    return digest


@click.command("go")
@click.argument("out")
def go(out):
    write.BundleWriter.write_bytes = slow
    write_tiny_bundle(Path(out))
"""

_RUN = """
import sys
from onnxedge.runtime import cli
cli.COMMANDS["go"] = "slow_writer:go"
sys.exit(cli.main())
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_writing_removes_temporaries_and_the_lock(tmp_path, sig, code):
    """A writer stopped by a signal in the middle of its bundle: exit 143 (SIGTERM) or 130
    (SIGINT), the old bundle whole, nothing of its own left beside it."""
    out = write_tiny_bundle(tmp_path / "data" / "b", **{"tag.txt": b"old"})
    (tmp_path / "slow_writer.py").write_text(_COMMAND)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{Path(__file__).parent}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN, "go", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout.readline() == b"writing\n"
    assert len(list(out.parent.iterdir())) == 3  # the bundle, the writer's temporary, its lock
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] in ("onnxedge: terminated", "onnxedge: interrupted")
    assert sorted(p.name for p in out.parent.iterdir()) == ["b"]
    assert Bundle.open(out).read_bytes("tag.txt") == b"old"


def test_a_report_through_a_link_or_to_a_device_keeps_them(tmp_path):
    """``--json /dev/stdout`` must not put a regular file where the device (or the link to it)
    was: a path that is not a regular file is written in place, a link keeps pointing."""
    link = tmp_path / "null.json"
    link.symlink_to(os.devnull)
    atomic_write_bytes(link, b"{}")
    assert link.is_symlink() and Path(os.devnull).is_char_device()
    real = tmp_path / "real.json"
    real.write_bytes(b"old")
    (tmp_path / "alias.json").symlink_to(real)
    atomic_write_bytes(tmp_path / "alias.json", b"new")
    assert (tmp_path / "alias.json").is_symlink() and real.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.json", "null.json", "real.json"]


def test_predicts_json_lines_through_a_link_or_to_a_device_keep_them(tmp_path):
    """predict streams its ``--json`` lines into its own file, not through
    `atomic_write_bytes`: it must keep a device and a link as the other reports do (it renamed
    a temporary file over them, and as root over /dev/null itself)."""
    from click.testing import CliRunner
    from PIL import Image

    from onnxedge.runtime.cli import main

    out = write_tiny_bundle(tmp_path / "b")
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "x.png")
    null = tmp_path / "null.json"
    null.symlink_to(os.devnull)
    real = tmp_path / "real.json"
    real.write_text("old")
    (tmp_path / "alias.json").symlink_to(real)
    for report in (null, tmp_path / "alias.json"):
        result = CliRunner().invoke(
            main, ["predict", str(out), str(tmp_path / "x.png"), "--json", str(report)]
        )
        assert result.exit_code == 0, result.output
    assert null.is_symlink() and Path(os.devnull).is_char_device()
    assert (tmp_path / "alias.json").is_symlink()
    assert json.loads(real.read_text())["file"].endswith("x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alias.json",
        "b",
        "null.json",
        "real.json",
        "x.png",
    ]


def test_other_packages_warnings_are_debug_lines_and_ours_are_shown(caplog, capsys, monkeypatch):
    import logging
    import warnings

    from onnxedge.runtime import cli

    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args: shown.append(str(message)))
    cli._quiet_third_party_warnings()
    with caplog.at_level(logging.DEBUG, logger="warnings"):
        warnings.showwarning("load it unsafely", UserWarning, "/opt/torch/serialization.py", 1)
        ours = str(Path(cli.__file__).parent / "predict.py")
        warnings.showwarning("a warning of ours", UserWarning, ours, 1)
    # ours in the one warning format on stderr, never passed on to Python's own display
    assert shown == []
    assert capsys.readouterr().err.splitlines() == ["onnxedge: warning: a warning of ours"]
    assert [r.getMessage() for r in caplog.records if "unsafely" in r.getMessage()] == [
        "UserWarning: load it unsafely (/opt/torch/serialization.py:1)"
    ]


def test_threads_above_the_usable_cores_warn_once(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from onnxedge.runtime.cli import main, options

    monkeypatch.setattr(options, "usable_cores", lambda: 2)
    out = write_tiny_bundle(tmp_path / "b")
    (tmp_path / "x.png").write_bytes(b"")
    result = CliRunner().invoke(
        main, ["predict", str(out), str(tmp_path / "x.png"), "--threads", "3"]
    )
    warned = [line for line in result.stderr.splitlines() if "usable core" in line]
    assert warned == [
        "onnxedge: warning: --threads 3 is more than the 2 usable cores; the threads share "
        "them and run slower"
    ]
    result = CliRunner().invoke(
        main, ["predict", str(out), str(tmp_path / "x.png"), "--threads", "2"]
    )
    assert "usable core" not in result.stderr
    # -q: errors only on stderr (the warning and the summary were printed), the rows the same
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "y.png")
    args = ["predict", str(out), str(tmp_path / "y.png"), "--threads", "3"]
    loud, quiet = CliRunner().invoke(main, args), CliRunner().invoke(main, ["-q", *args])
    assert quiet.exit_code == loud.exit_code == 0 and quiet.stdout == loud.stdout
    assert "usable core" in loud.stderr and "1 file: 1 classified" in loud.stderr
    assert quiet.stderr == ""
    after = CliRunner().invoke(main, [*args, "-q"])  # -q after --threads: eager, it counts first
    assert after.exit_code == 0 and after.stdout == loud.stdout and after.stderr == ""
    broken = CliRunner().invoke(main, ["-q", *args, str(tmp_path / "x.png")])
    assert broken.exit_code == 1 and broken.stderr == ""  # the ERROR row is a result


def test_ctrl_c_while_the_command_loads_is_one_line_and_130(monkeypatch, capsys):
    """The console script imported the CLI (numpy, the engines: about half a second) before any
    handler ran, so an early Ctrl-C was a 30-frame traceback of the import."""
    import importlib.abc

    from onnxedge.runtime import __main__ as entry

    class Interrupted(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "onnxedge.runtime.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "onnxedge.runtime.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    with pytest.raises(SystemExit) as stopped:
        entry.main()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "onnxedge: interrupted\n"
