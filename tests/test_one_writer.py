"""One writer per bundle, one generation per reader, and the bytes checked are the bytes loaded:
a command that reads a bundle and writes it back holds its lock throughout (`bundle_lock`), a
second writer waits or says who holds it, a reader never mixes two generations, and a model file
swapped after its check is not the model that runs."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx.parser
import pytest
from test_bundle import MINIMAL, TINY, write_tiny_bundle

from onnxedge.runtime.bundle import verify as bundle_verify
from onnxedge.runtime.bundle.lock import LOCK_WAIT_ENV, bundle_lock, lock_wait
from onnxedge.runtime.bundle.reader import Bundle, BundleWriter
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.errors import OnnxEdgeError

# The same input and output as TINY, and a probability of sigmoid(5) whatever the image.
SWAPPED = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 18]>
    swapped (float[batch,3,64,64] input) => (float[batch,1] prob) {
      pooled = GlobalAveragePool(input)
      flat = Flatten(pooled)
      axes = Constant<value = int64[1] {1}>()
      mean = ReduceMean<keepdims=1>(flat, axes)
      zero = Mul(mean, mean)
      nothing = Sub(zero, zero)
      five = Constant<value = float {5.0}>()
      logit = Add(nothing, five)
      prob = Sigmoid(logit)
    }""").SerializeToString()


def _add_file(out: str, tag: str, rounds: int, start: object) -> None:
    """An in-place writer: read the bundle, add one file, write it back; under the lock."""
    start.wait()  # type: ignore[attr-defined]
    for i in range(rounds):
        with bundle_lock(out):
            bundle = Bundle.open(out)
            files = {name: bundle.read_bytes(name) for name in bundle.manifest["files"]}
            time.sleep(0.02)  # the read-modify-write window another writer would fall into
            with BundleWriter(out) as writer:
                writer.manifest.update(MINIMAL)
                for name, data in files.items():
                    writer.write_bytes(name, data)
                writer.write_bytes(f"{tag}-{i}.txt", tag.encode())


def test_two_in_place_writers_lose_nothing(tmp_path):
    out = write_tiny_bundle(tmp_path / "b")
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    writers = [ctx.Process(target=_add_file, args=(str(out), t, 4, start)) for t in "xy"]
    for w in writers:
        w.start()
    start.set()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    files = set(Bundle.open(out).manifest["files"])
    assert {f"{t}-{i}.txt" for t in "xy" for i in range(4)} <= files
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no lock or temporary left


_HOLD = """
import sys, time
from onnxedge.runtime.bundle.lock import bundle_lock
with bundle_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_writer_names_the_holder_and_exits_1(tmp_path):
    out = write_tiny_bundle(tmp_path / "b")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        env = {**os.environ, LOCK_WAIT_ENV: "0.3"}
        second = subprocess.run(
            [sys.executable, "-m", "onnxedge.runtime", "optimize", str(out), "--data", "x"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 1, second.stderr
    assert "Traceback" not in second.stderr
    assert lines[-1].startswith("onnxedge: error: cannot write the bundle to "), lines
    assert f"pid {holder.pid} (-c {out} 30) holds its lock" in lines[-1]
    assert all(len(line) <= 200 + 2 * len(str(out)) for line in lines)
    # The holder was killed: the kernel released its lock, and the next writer takes it.
    write_tiny_bundle(out)
    assert Bundle.open(out)


def test_the_lock_wait_comes_from_the_environment_and_is_checked(monkeypatch):
    monkeypatch.setenv(LOCK_WAIT_ENV, "2.5")
    assert lock_wait() == 2.5
    monkeypatch.setenv(LOCK_WAIT_ENV, "soon")
    with pytest.raises(OnnxEdgeError, match=r"ONNXEDGE_LOCK_WAIT: expected seconds >= 0"):
        lock_wait()
    monkeypatch.delenv(LOCK_WAIT_ENV)
    assert lock_wait() == 120.0


def test_the_lock_is_reentrant_within_a_thread(tmp_path):
    out = tmp_path / "b"
    with bundle_lock(out, timeout=0), bundle_lock(out, timeout=0):
        write_tiny_bundle(out)  # BundleWriter inside: the same lock, not a wait for itself
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


# -- readers see one generation -------------------------------------------------------------


def test_a_bundle_replaced_while_it_is_read_is_read_again_whole(tmp_path, monkeypatch):
    out = write_tiny_bundle(tmp_path / "b", **{"tag.txt": b"old"})
    real_read = bundle_verify.Generation.read
    swaps = []

    def read(self, name, display, **kw):
        data = real_read(self, name, display, **kw)
        if name == "manifest.json" and not swaps:  # a writer swaps right after the manifest
            swaps.append(name)
            write_tiny_bundle(out, model=SWAPPED, **{"tag.txt": b"new"})
        return data

    monkeypatch.setattr(bundle_verify.Generation, "read", read)
    bundle = Bundle.open(out)
    assert swaps
    assert bundle.read_bytes("tag.txt") == b"new"  # the new generation, whole
    assert bundle.read_bytes("model.onnx") == SWAPPED


def test_a_file_of_a_replaced_bundle_is_not_read_from_the_new_one(tmp_path):
    out = write_tiny_bundle(tmp_path / "b", **{"tag.txt": b"old"})
    bundle = Bundle.open(out)
    write_tiny_bundle(out, **{"tag.txt": b"new"})
    with pytest.raises(OnnxEdgeError, match=r"was replaced by another onnxedge run .*run again"):
        bundle.read_bytes("tag.txt")


def _rewrite(out: str, stop: object) -> None:
    i = 0
    while not stop.is_set():  # type: ignore[attr-defined]
        i += 1
        write_tiny_bundle(Path(out), model=(TINY, SWAPPED)[i % 2], **{"n.txt": str(i).encode()})


def test_readers_during_rewrites_never_see_a_mismatch(tmp_path):
    out = write_tiny_bundle(tmp_path / "b")
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    writer = ctx.Process(target=_rewrite, args=(str(out), stop))
    writer.start()
    try:
        opened = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline or opened < 50:
            bundle, model = Bundle.open_model(out)  # a mismatch would raise BundleError
            assert model in (TINY, SWAPPED)
            assert bundle.manifest["files"]["model.onnx"]["bytes"] == len(model)
            opened += 1
    finally:
        stop.set()
        writer.join(30)
    assert writer.exitcode == 0


# -- the bytes checked are the bytes loaded -----------------------------------------------------


def test_a_model_swapped_after_its_check_is_not_the_one_that_runs(tmp_path, monkeypatch):
    out = write_tiny_bundle(tmp_path / "b")
    real = Bundle.model_bytes

    def checked_then_swapped(self, variant=None):
        data = real(self, variant)
        (out / "model.onnx").write_bytes(SWAPPED)  # in place, after the check
        return data

    monkeypatch.setattr(Bundle, "model_bytes", checked_then_swapped)
    clf = Classifier.from_bundle(out, provider="cpu")
    dark = np.zeros((1, 3, 64, 64), np.float32)
    (p,) = clf.predict_array(dark)
    assert p.probability == pytest.approx(0.5)  # TINY's sigmoid(0); SWAPPED gives 0.993
    assert (out / "model.onnx").read_bytes() == SWAPPED


def test_external_data_is_loaded_from_its_verified_bytes(tmp_path):
    model = onnx.load_model_from_string(TINY)
    weight = onnx.numpy_helper.from_array(np.full((1,), 3.0, np.float32), "w")
    model.graph.initializer.append(weight)
    node = onnx.helper.make_node("Mul", ["mean_w", "w"], ["prob"])
    model.graph.node[-1].output[0] = "mean_w"
    model.graph.node.append(node)
    onnx.external_data_helper.convert_model_to_external_data(
        model, location="weights.bin", size_threshold=0
    )
    data = onnx.external_data_helper.ExternalDataInfo(model.graph.initializer[0])
    raw = np.full((1,), 3.0, np.float32).tobytes()
    model.graph.initializer[0].ClearField("raw_data")
    with BundleWriter(tmp_path / "b") as writer:
        writer.manifest.update(MINIMAL)
        writer.write_bytes("model.onnx", model.SerializeToString())
        writer.write_bytes("weights.bin", raw)
    assert data.location == "weights.bin"
    bundle = Bundle.open(tmp_path / "b")
    loaded = onnx.load_model_from_string(bundle.model_bytes())
    (init,) = loaded.graph.initializer
    assert init.data_location == onnx.TensorProto.DEFAULT and init.raw_data == raw
    (tmp_path / "b" / "weights.bin").write_bytes(np.full((1,), 7.0, np.float32).tobytes())
    with pytest.raises(OnnxEdgeError, match=r"weights.bin does not match the manifest"):
        bundle.model_bytes()
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["files"]["weights.bin"]
