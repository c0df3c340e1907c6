"""Batch processes (``batch_processes`` of `Classifier.predict_files`, ``predict
--batch-processes``, the default pool on ONNX Runtime's CPU EP): each process decodes whole
batches and runs them on a 1-thread session of its own; the results are a serial run's, in input
order, bad files in their place, and no process is left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_decode import celeba_like, with_bad_files
from test_decode_processes import (  # noqa: F401 (no_workers_left_behind: autouse)
    assert_each_in_place,
    items_with_bad_ones,
    no_workers_left_behind,
)

from onnxedge.runtime.classifier import decode as decode_module
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.classifier.decode import DecodePool, pool_arguments
from onnxedge.runtime.classifier.files import BatchWork, concurrent_batches, shared_tail
from onnxedge.runtime.classifier.loader import ONE_THREAD_RUN, SessionRecipe
from onnxedge.runtime.classifier.predictions import ModelOutputError
from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import ArgumentError, OnnxEdgeError


@pytest.fixture(scope="module")
def clf(smile_bundle: Path) -> Classifier:
    return Classifier.from_bundle(smile_bundle, provider="cpu")


class PidRecipe:
    """A `SessionRecipe` that leaves a file named after the process that calls it."""

    def __init__(self, recipe: SessionRecipe, folder: Path) -> None:
        self.recipe, self.folder = recipe, folder

    def __call__(self, threads: int = 1):
        (self.folder / str(os.getpid())).write_text(str(threads))
        return self.recipe(threads)


@pytest.mark.parametrize("processes,batch_size", [(1, 4), (2, 3), (3, 32)])
def test_the_results_are_those_of_a_serial_run(clf, tmp_path, processes, batch_size):
    items, bad = items_with_bad_ones(tmp_path)
    serial = list(clf.predict_files(items, batch_size=batch_size, decode_threads=1))
    pids = tmp_path / "pids"
    pids.mkdir()
    worker = Classifier.from_bundle(clf.path, provider="cpu")
    worker.batch_session = PidRecipe(worker.batch_session, pids)
    pooled = list(worker.predict_files(items, batch_size=batch_size, batch_processes=processes))
    assert pooled == serial  # files, errors, probabilities (exact floats), labels, in order
    assert_each_in_place(pooled, items, bad)
    made = {int(p.name): int(p.read_text()) for p in pids.iterdir()}
    assert os.getpid() not in made and 1 <= len(made) <= processes  # a session per process
    share = max(1, decode_module.usable_cpus() // processes)  # each its share of the CPUs
    assert set(made.values()) == {share}


class RunSizes:
    """A `SessionRecipe` whose sessions append the batch size of each call to a file named after
    the process that calls them."""

    def __init__(self, recipe: SessionRecipe, folder: Path) -> None:
        self.recipe, self.folder = recipe, folder

    def __call__(self, threads: int = 1):
        return RecordingSession(self.recipe(threads), self.folder / str(os.getpid()))


class RecordingSession:
    def __init__(self, session, log: Path) -> None:
        self.session, self.log = session, log

    def run(self, names, feeds):
        with self.log.open("a") as f:
            f.write(f"{len(next(iter(feeds.values())))}\n")
        return self.session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_a_batch_process_calls_the_model_on_runs_of_one_thread_run_images(clf, tmp_path):
    """A batch of 20 on a batch process's one thread is handed over whole and run 8, 8 and 4
    images at a time (`ONE_THREAD_RUN`: a run's activations stay in the core's caches); the
    last two batches (20 and 3) are shared out in smaller ones (`shared_tail`); the results are
    still the serial run's, which calls the model on whole batches."""
    paths = celeba_like(tmp_path / "faces", 43)
    serial = list(clf.predict_files(paths, batch_size=20, decode_threads=1))
    logs = tmp_path / "runs"
    logs.mkdir()
    worker = Classifier.from_bundle(clf.path, provider="cpu")
    worker.batch_session = RunSizes(worker.batch_session, logs)
    processes = decode_module.usable_cpus()  # a thread each
    got = list(worker.predict_files(paths, batch_size=20, batch_processes=processes))
    assert got == serial
    logged = [log.read_text() for log in logs.iterdir()]
    assert ONE_THREAD_RUN == 8
    assert any("8\n8\n4\n" in log for log in logged)  # the first batch, in one process
    tail = [len(b) for b in shared_tail(iter([[0] * 20, [0] * 3]), 2 * processes)]
    assert sum(tail) == 23 and max(tail) <= 8  # here each piece is one call
    calls = sorted(int(n) for log in logged for n in log.split())
    assert calls == sorted([8, 8, 4, *tail])


def test_prediction_rows_call_the_model_on_runs_of_the_size_given(clf, tmp_path):
    """`prediction_rows` with a run size (the one-thread sessions of concurrent batches) gives
    the rows of one call on the whole batch."""
    import copy

    from onnxedge.runtime.classifier.loader import prediction_rows

    pixels = np.random.default_rng(0).integers(0, 256, (11, 64, 64, 3), dtype=np.uint8)
    whole = prediction_rows(clf, None)(pixels)
    spy = copy.copy(clf)
    spy.session = RecordingSession(clf.session, tmp_path / "calls")
    assert prediction_rows(spy, None, 4)(pixels) == whole
    assert (tmp_path / "calls").read_text().split() == ["4", "4", "3"]


def test_fast_decoding_in_batch_processes_gives_the_serial_fast_results(smile_bundle, tmp_path):
    fast = Classifier.from_bundle(smile_bundle, provider="cpu", decode="fast")
    paths = celeba_like(tmp_path / "faces", 24)
    serial = list(fast.predict_files(paths, batch_size=5, decode_threads=1))
    assert list(fast.predict_files(paths, batch_size=5, batch_processes=2)) == serial


def test_openvino_keeps_decoder_processes(smile_bundle, monkeypatch):
    """OpenVINO's compile_model in a forked process waits for ever on an executor thread of the
    parent's (seen in this suite): an OpenVINO classifier never gets batch processes."""
    pytest.importorskip("openvino")
    monkeypatch.setattr(decode_module, "usable_cpus", lambda: 2)
    ov = Classifier.from_bundle(smile_bundle, provider="cpu", engine="openvino")
    assert ov.batch_session is None
    assert ov.file_pool() == DecodePool(1, processes=True)
    with pytest.raises(
        ArgumentError, match=r"ONNX Runtime.s CPU EP .* found an OpenVINO classifier"
    ):
        ov.file_pool(batch_processes=2)


def test_the_default_pool_is_one_batch_process_per_cpu_on_onnx_runtimes_cpu_ep(
    smile_bundle, monkeypatch
):
    monkeypatch.setattr(decode_module, "usable_cpus", lambda: 3)
    default = Classifier.from_bundle(smile_bundle, provider="cpu")
    assert default.file_pool() == DecodePool(3, processes=True, batches=True)
    assert default.file_pool(decode_processes=2) == DecodePool(2, processes=True)
    assert default.file_pool(decode_threads=1) == DecodePool(1)
    threaded = Classifier.from_bundle(smile_bundle, provider="cpu", threads=2)
    assert threaded.batch_session is None
    assert threaded.file_pool() == DecodePool(1, processes=True)  # one decoder per two CPUs
    monkeypatch.setattr(decode_module, "usable_cpus", lambda: 1)
    assert default.file_pool() == DecodePool(1)
    assert pool_arguments("batches") == {"batch_processes": 1}


def test_batch_processes_run_their_own_batches_not_concurrent_ones_here():
    assert concurrent_batches(DecodePool(2, processes=True, batches=True), 2, one_thread=True) == 1


@pytest.mark.parametrize(
    ("kwargs", "found"),
    [({"threads": 1}, "one with its threads given"), ({}, "one built on a session")],
)
def test_batch_processes_are_refused_where_there_is_no_session_for_them(
    smile_bundle, clf, kwargs, found
):
    if kwargs:
        other = Classifier.from_bundle(smile_bundle, provider="cpu", **kwargs)
    else:  # a classifier built on a session of the caller's: nothing to make another from
        other = Classifier(clf.session, clf.manifest, provider=clf.provider, path=clf.path)
    with pytest.raises(ArgumentError, match=f"for batch_processes; found {found}$"):
        other.predict_files([], batch_processes=2)


def test_an_engine_error_in_a_batch_process_comes_back_with_its_message(clf, tmp_path):
    paths = celeba_like(tmp_path / "faces", 12)
    broken = Classifier.from_bundle(clf.path, provider="cpu")

    def no_session(threads):
        raise OnnxEdgeError("cannot make the session: out of memory (a test)")

    broken.batch_session = no_session
    with pytest.raises(OnnxEdgeError, match=r"^cannot make the session: out of memory \(a test"):
        list(broken.predict_files(paths, batch_size=4, batch_processes=2))


def test_batch_work_sends_an_engine_error_as_one_that_pickles():
    def rows(_):
        raise ModelOutputError("the model gave NaN for 1 of 2 images", [1])

    work = BatchWork(lambda item: (str(item), np.zeros((2, 2, 3), np.uint8)), lambda: rows)
    with pytest.raises(OnnxEdgeError) as caught:
        work(["a.jpg", "b.jpg"])
    assert type(caught.value) is OnnxEdgeError and "NaN for 1 of 2" in str(caught.value)


def test_pools_in_words():
    assert DecodePool(2, processes=True, batches=True).describe() == "2 batch processes"
    assert DecodePool(1, processes=True).describe() == "1 decoder process"
    assert DecodePool(2).describe() == "2 decoding threads"
    assert DecodePool(1).describe() == "1 decoding thread"


# -- the command ----------------------------------------------------------------------------------


def predict(*args: object):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def test_predict_prints_a_serial_runs_lines_with_batch_processes(smile_bundle, tmp_path):
    paths, _ = with_bad_files(tmp_path, celeba_like(tmp_path / "faces", 30))
    serial = predict(smile_bundle, *paths, "--batch-size", 4, "--decode-threads", 1)
    pooled = predict(smile_bundle, *paths, "--batch-size", 4, "--batch-processes", 2)
    default = predict(smile_bundle, *paths, "--batch-size", 4)
    assert serial.exit_code == pooled.exit_code == default.exit_code == 1, pooled.output
    assert pooled.stdout == serial.stdout == default.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch-processes", "0"], "--batch-processes"),
        (["--batch-processes", "2", "--decode-threads", "2"], "give one of them"),
        (["--batch-processes", "2", "--decode-processes", "1"], "give one of them"),
        (["--batch-processes", "2", "--threads", "2"], "found --threads 2 too"),
    ],
)
def test_bad_batch_processes_are_usage_errors(smile_bundle, tmp_path, args, message):
    result = predict(smile_bundle, tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_batch_process_that_dies_is_one_error_and_the_others_stop(clf, tmp_path):
    paths = celeba_like(tmp_path / "faces", 12)
    dying = Classifier.from_bundle(clf.path, provider="cpu")
    dying.batch_session = lambda threads: os.kill(os.getpid(), signal.SIGKILL)  # as out of memory
    with pytest.raises(OnnxEdgeError, match=r"^expected the worker processes .* ended abruptly"):
        list(dying.predict_files(paths, batch_size=4, batch_processes=2))


@pytest.mark.parametrize(
    "sizes,parts,shared",
    [
        ([], 4, []),
        ([3], 4, [1, 1, 1]),  # never an empty batch
        ([20, 3], 4, [6, 6, 6, 5]),
        ([20, 20, 3], 4, [20, 6, 6, 6, 5]),  # only the last two are shared out
        ([20, 20, 20], 2, [20, 20, 20]),  # ending on a full batch: the last two, in 2
        ([8, 8, 8, 8], 4, [8, 8, 4, 4, 4, 4]),
        ([5, 2], 1, [5, 2]),  # never larger than a batch
    ],
)
def test_the_last_two_batches_are_shared_out(sizes, parts, shared):
    items = iter(range(sum(sizes)))
    batches = [[next(items) for _ in range(n)] for n in sizes]
    out = list(shared_tail(iter(batches), parts))
    assert [len(b) for b in out] == shared
    assert [i for b in out for i in b] == list(range(sum(sizes)))  # every item, in order
