"""The bundle: written atomically, serialised and cleaned up by the writer; refused by the one
reader (`Bundle.open`) when any path leaves it, any file the model needs is unlisted or changed,
or the model is not the one the manifest describes."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import stat
import threading
from pathlib import Path

import onnx
import onnx.parser
import pytest

from onnxedge.runtime.bundle import lock as bundle_lock_module
from onnxedge.runtime.bundle import reader as bundle_mod
from onnxedge.runtime.bundle import write as bundle_write
from onnxedge.runtime.bundle.reader import Bundle, BundleWriter, atomic_write_bytes
from onnxedge.runtime.errors import BundleError, OnnxEdgeError


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "report.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["report.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~bundle_write.umask()


def test_a_written_file_takes_the_umask_or_the_old_files_mode(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "private.json", b"x")
        write_tiny_bundle(tmp_path / "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o700
    shared = tmp_path / "shared.json"
    shared.write_bytes(b"old")
    shared.chmod(0o640)
    atomic_write_bytes(shared, b"new")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640 and shared.read_bytes() == b"new"


def test_an_error_of_the_block_is_not_taken_for_a_failed_write(tmp_path):
    target = tmp_path / "report.json"
    with pytest.raises(FileNotFoundError), bundle_write.atomic_file(target) as f:
        f.write("a part")
        raise FileNotFoundError(errno.ENOENT, "a file the block read")  # no filename given
    assert not target.exists() and os.listdir(tmp_path) == []
    failed = pytest.raises(OnnxEdgeError, match=r"cannot write .*report.json: Input/output error")
    with failed, bundle_write.atomic_file(target):
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_write.os, "replace", broken_replace)
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


def tiny_model(
    input_type: str = "float[batch,3,64,64] input", outputs: str = "", *, shapeless: bool = False
) -> bytes:
    """A tiny classifier as MINIMAL states it (the mean pixel, through a sigmoid); the arguments
    change its input's declaration, add outputs, or drop the input's shape, to make a model that
    disagrees."""
    model = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 18]>
        tiny ({input_type}) => (float[batch,1] prob{outputs}) {{
          pooled = GlobalAveragePool(input)
          flat = Flatten(pooled)
          axes = Constant<value = int64[1] {{1}}>()
          mean = ReduceMean<keepdims=1>(flat, axes)
          prob = Sigmoid(mean)
        }}""")
    if shapeless:
        model.graph.input[0].type.tensor_type.ClearField("shape")
    return model.SerializeToString()


TINY = tiny_model()


def write_tiny_bundle(out: Path, model: bytes = TINY, **extra: bytes) -> Path:
    with BundleWriter(out) as writer:
        writer.manifest.update(MINIMAL)
        writer.write_bytes("model.onnx", model)
        for name, data in extra.items():
            writer.write_bytes(name, data)
    return out


def edit_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def list_file(bundle: Path, name: str, path: Path | None = None) -> None:
    """List ``name`` in the manifest with the sha256 of ``path`` (default: the file itself)."""
    from onnxedge.runtime.bundle.hashing import sha256_file

    digest = sha256_file(path or bundle / name)
    edit_manifest(bundle, lambda m: m["files"].__setitem__(name, {"sha256": digest}))


def test_bundle_is_complete_only_with_its_manifest(tmp_path):
    out = tmp_path / "b"
    with BundleWriter(out) as writer:
        writer.manifest.update(MINIMAL)
        writer.write_bytes("model.onnx", TINY)
        assert not out.exists()  # built under a temporary name until the end
        assert not (writer.tmp_dir / "manifest.json").exists()
    bundle = Bundle.open(out)
    assert bundle.manifest["files"]["model.onnx"]["bytes"] == len(TINY)
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
    out = write_tiny_bundle(tmp_path / "b")
    data = bytearray(TINY)
    data[-1] ^= 1
    (out / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the manifest"):
        Bundle.open(out)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"files": ["model.onnx"]}, "expected 'files' mapping each file to its sha256"),
        ({"files": {"model.onnx": {"bytes": 3}}}, r"files\['model.onnx'\]: expected a sha256"),
        ({"labels": {"threshold": "high"}}, "expected labels with a threshold in"),
        ({"labels": None}, "expected labels with a threshold in"),
        ({"input": "x"}, "the manifest's 'input' block: expected name, shape"),
        ({"input": {"name": "x", "shape": [1], "dtype": "banana"}}, "dtype \\(one of float32"),
        ({"labels": {"threshold": float("nan")}}, "expected labels with a threshold in"),
        ({"output": {"name": "prob", "shape": ["N", 0], "dtype": "float32"}}, "'output' block"),
        ({"preprocessing": {"resize": [64]}}, r"expected preprocessing with resize as \[height"),
        ({"preprocessing": {"resize": [64, 64], "std": [1, 0, 1]}}, "std without zeros"),
        ({"preprocessing": None}, "expected preprocessing with a mapping"),
        (
            {"preprocessing": {"resize": [64, 64], "dtype": "int64"}},
            "expected preprocessing with dtype float32, found 'int64'",
        ),
        (
            {"labels": {"threshold": 0.5, "positive": 5, "negative": "no"}},
            "expected labels' positive as a class name",
        ),
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


# -- the reader: paths confined before anything is read ------------------------------------------


@pytest.mark.parametrize(
    "name,found",
    [
        ("../outside.bin", "'..'"),
        ("a/../../outside.bin", "'..'"),
        ("/etc/passwd", "an absolute path"),
        ("C:/Windows/x.bin", "an absolute path"),
        ("\\\\server\\share\\x.bin", "an absolute path"),
        ("sub\\..\\..\\x.bin", "a backslash"),
        ("./model.onnx", "an empty or '.' part"),
        ("a//b", "an empty or '.' part"),
        ("", "''"),
        ("a\0b", "a NUL byte"),
    ],
)
def test_open_refuses_a_listed_path_that_leaves_the_bundle(tmp_path, name, found):
    out = write_tiny_bundle(tmp_path / "b")
    edit_manifest(out, lambda m: m["files"].__setitem__(name, {"sha256": "0" * 64}))
    with pytest.raises(BundleError, match="expected a relative path inside the bundle, found "):
        Bundle.open(out)
    with pytest.raises(BundleError) as e:
        Bundle.open(out)
    assert f"found {found}" in str(e.value)


def test_open_refuses_a_sha256_that_is_not_hex(tmp_path):
    out = write_tiny_bundle(tmp_path / "b")
    edit_manifest(out, lambda m: m["files"]["model.onnx"].__setitem__("sha256", "z" * 64))
    with pytest.raises(BundleError, match=r"files\['model.onnx'\]: expected a sha256"):
        Bundle.open(out)


@pytest.fixture
def hashed(monkeypatch):
    """The files whose sha256 is computed (resolved paths), to prove what is never read."""
    from onnxedge.runtime.bundle import verify as bundle_verify

    seen: list[Path] = []
    real = bundle_verify.sha256_file

    def spy(path, *args, **kw):
        seen.append(Path(path).resolve())
        return real(path, *args, **kw)

    monkeypatch.setattr(bundle_verify, "sha256_file", spy)
    return seen


@pytest.mark.parametrize("name", ["model.onnx", "golden.npz"])
def test_a_symlink_out_is_refused_before_it_is_hashed(tmp_path, hashed, name):
    """The outside file is a copy of the real one and listed with its true sha256: only the
    confinement stands between it and a session, and it is checked before anything is read."""
    out = write_tiny_bundle(tmp_path / "b", **{"golden.npz": b"golden"})
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    outside.write_bytes((out / name).read_bytes())
    (out / name).unlink()
    (out / name).symlink_to(outside)
    with pytest.raises(BundleError) as e:
        Bundle.open(out)
    message = str(e.value)
    assert f"which resolves to {outside}, outside the bundle" in message
    assert outside.resolve() not in hashed
    from onnxedge.runtime.bundle.hashing import sha256_file

    assert sha256_file(outside)[:16] not in message


def test_a_symlink_inside_the_bundle_is_followed(tmp_path):
    out = write_tiny_bundle(tmp_path / "b")
    (out / "real").mkdir()
    (out / "model.onnx").rename(out / "real" / "model.onnx")
    (out / "model.onnx").symlink_to(Path("real") / "model.onnx")
    assert Bundle.open(out).input.name == "input"


def test_a_manifest_symlinked_out_is_not_read(tmp_path, monkeypatch):
    good = write_tiny_bundle(tmp_path / "good")
    out = tmp_path / "b"
    out.mkdir()
    (out / "model.onnx").write_bytes(TINY)
    (out / "manifest.json").symlink_to(good / "manifest.json")
    with pytest.raises(BundleError, match=r"the bundle's manifest is 'manifest\.json', which "):
        Bundle.open(out)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_listed_file_that_is_not_a_file_is_refused_without_blocking(tmp_path, kind):
    out = write_tiny_bundle(tmp_path / "b", **{"golden.npz": b"golden"})
    (out / "golden.npz").unlink()
    if kind == "directory":
        (out / "golden.npz").mkdir()
    else:
        os.mkfifo(out / "golden.npz")
    found = "a directory" if kind == "directory" else "not a regular file"
    with pytest.raises(
        BundleError, match=f"expected a file \\(the manifest lists it\\), found {found}"
    ):
        Bundle.open(out).file("golden.npz")


def test_a_huge_manifest_is_not_read(tmp_path, monkeypatch):
    out = write_tiny_bundle(tmp_path / "b")
    monkeypatch.setattr(bundle_mod, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(BundleError, match="expected a manifest of at most 100 bytes, found"):
        Bundle.open(out)


def test_a_listed_file_that_is_missing_is_refused_when_used(tmp_path):
    out = write_tiny_bundle(tmp_path / "b", **{"golden.npz": b"golden"})
    (out / "golden.npz").unlink()
    bundle = Bundle.open(out)  # not needed by the model
    with pytest.raises(BundleError, match=r"golden\.npz is missing \(the manifest lists it\)"):
        bundle.file("golden.npz")


def test_a_file_that_is_not_onnx_is_refused_at_open(tmp_path):
    out = write_tiny_bundle(tmp_path / "b", model=b"not a model")
    with pytest.raises(BundleError, match=r"model\.onnx is not an ONNX model: protobuf says"):
        Bundle.open(out)


# -- the reader: the model is the one the manifest describes --------------------------------------


@pytest.mark.parametrize(
    "model,message",
    [
        (
            tiny_model("float[batch,3,64,64] pixels"),
            "the manifest's input 'input' does not match the model's inputs: 'pixels'",
        ),
        (
            tiny_model("double[batch,3,64,64] input"),
            "input 'input': the manifest says float32 array of shape [N, 3, 64, 64], the model "
            "has float64 array of shape [N, 3, 64, 64]",
        ),
        (
            tiny_model("float[batch,3,32,32] input"),
            "the model has float32 array of shape [N, 3, 32, 32]",
        ),
        (tiny_model("float[1,3,64,64] input"), "the model has float32 array of shape [1, 3, 64"),
        (tiny_model("float[batch,3,64] input"), "the model has float32 array of shape [N, 3, 64]"),
        (tiny_model("float input"), "the model has float32 array of shape []"),
        (tiny_model(shapeless=True), "the model has float32 array of unknown shape"),
        (
            tiny_model(outputs=", float[batch,3] flat"),
            "the manifest's output 'prob' does not match the model's outputs: 'prob', 'flat'",
        ),
    ],
)
def test_a_model_that_disagrees_with_the_manifest_is_refused(tmp_path, model, message):
    out = write_tiny_bundle(tmp_path / "b", model=model)
    with pytest.raises(BundleError) as e:
        Bundle.open(out)
    assert message in str(e.value)


def test_the_manifest_may_not_call_a_symbolic_dim_static(tmp_path):
    out = write_tiny_bundle(tmp_path / "b")
    edit_manifest(out, lambda m: m["output"].__setitem__("shape", [1, 1]))
    with pytest.raises(BundleError, match=r"the manifest says float32 array of shape \[1, 1\]"):
        Bundle.open(out)


# -- the writer -----------------------------------------------------------------------------------


def stale(out: Path, kind: str, suffix: str = "abcd1234") -> Path:
    path = out.parent / f".{out.name}.onnxedge-{kind}-{suffix}"
    path.mkdir()
    (path / "model.onnx").write_bytes(b"half")
    return path


def test_stale_temporaries_of_this_target_are_removed_and_no_others(tmp_path):
    out = tmp_path / "b"
    mine = [stale(out, "tmp"), stale(out, "old", "XYZ_9876"), stale(out, "probe")]
    other_target = stale(tmp_path / "b.v2", "tmp")
    not_ours = tmp_path / ".b.onnxedge-tmp-short"
    not_ours.mkdir()
    write_tiny_bundle(out)
    assert [p for p in mine if p.exists()] == []
    assert other_target.exists() and not_ours.exists()
    assert Bundle.open(out)


def _killed_writer(out: str) -> None:
    with BundleWriter(out) as writer:
        writer.manifest.update(MINIMAL)
        writer.write_bytes("model.onnx", TINY)
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_export_loses_nothing_and_the_next_one_cleans_up(tmp_path):
    out = write_tiny_bundle(tmp_path / "b", **{"extra.bin": b"old bundle"})
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_killed_writer, args=(str(out),))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    leftovers = sorted(p.name for p in tmp_path.iterdir() if "onnxedge-tmp" in p.name)
    assert len(leftovers) == 1  # what the kill left
    assert Bundle.open(out).file("extra.bin").read_bytes() == b"old bundle"  # the old one is whole
    write_tiny_bundle(out)
    assert not [p for p in tmp_path.iterdir() if "onnxedge-tmp" in p.name]


def test_a_writer_waits_for_the_lock_and_gives_up_with_a_clear_message(tmp_path):
    out = tmp_path / "b"
    held = bundle_lock_module._TargetLock(out, timeout=0)
    try:
        with (
            pytest.raises(
                OnnxEdgeError,
                match=rf"pid {os.getpid()} \(.*\) holds its lock and did not",
            ),
            BundleWriter(out, lock_timeout=0.2),
        ):
            pass
        done = threading.Event()

        def write() -> None:
            write_tiny_bundle(out)
            done.set()

        thread = threading.Thread(target=write)
        thread.start()
        assert not done.wait(0.5)  # it waits while the lock is held
    finally:
        held.release()
    thread.join(10)
    assert done.is_set() and Bundle.open(out)


def _concurrent_writer(out: str, tag: int, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    for round in range(5):
        write_tiny_bundle(Path(out), **{"tag.txt": f"{tag}-{round}".encode()})


def test_concurrent_writers_to_one_target_all_succeed_one_after_another(tmp_path):
    out = tmp_path / "b"
    write_tiny_bundle(out)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    writers = [ctx.Process(target=_concurrent_writer, args=(str(out), i, start)) for i in range(4)]
    for w in writers:
        w.start()
    start.set()
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0] * 4
    tag = Bundle.open(out).file("tag.txt").read_text()
    assert tag.endswith("-4")
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporaries, no lock file


@pytest.mark.parametrize("mode", [0o750, 0o2770, 0o700])
@pytest.mark.parametrize("existing", ["empty", "bundle"])
def test_the_new_bundle_keeps_the_permissions_of_what_it_replaces(tmp_path, mode, existing):
    out = tmp_path / "b"
    if existing == "bundle":
        write_tiny_bundle(out)
    else:
        out.mkdir()
    out.chmod(mode)
    write_tiny_bundle(out)
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert Bundle.open(out)


def test_a_new_bundle_is_world_readable(tmp_path):
    out = write_tiny_bundle(tmp_path / "b")
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~bundle_write.umask() == 0o755


def test_a_target_of_another_user_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    out = tmp_path / "b"
    out.mkdir()
    monkeypatch.setattr(os, "geteuid", lambda: out.stat().st_uid + 1)
    with pytest.raises(OnnxEdgeError, match=r"refusing to replace .*: it belongs to another user"):
        BundleWriter(out).check_target()
    assert list(tmp_path.iterdir()) == [out]


def test_a_target_of_a_group_this_user_is_not_in_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "b"
    out.mkdir()
    os.chown(out, 12345, 12345)
    monkeypatch.setattr(os, "geteuid", lambda: 12345)
    monkeypatch.setattr(os, "getegid", lambda: 12346)
    monkeypatch.setattr(os, "getgroups", lambda: [12347])
    with pytest.raises(OnnxEdgeError, match=r"it belongs to group 12345, which this user cannot"):
        BundleWriter(out).check_target()


def test_a_symlinked_target_keeps_its_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    write_tiny_bundle(link)
    assert link.is_symlink() and (real / "manifest.json").is_file()
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nothing")
    with pytest.raises(OnnxEdgeError, match="found a symbolic link to nothing"):
        BundleWriter(dangling).check_target()


def test_the_writer_refuses_names_the_reader_would_refuse(tmp_path):
    with BundleWriter(tmp_path / "b") as writer, pytest.raises(ValueError, match=r"found '\.\.'"):
        writer.write_bytes("../x", b"")
