"""Image files decoded in worker processes (`onnxedge.runtime.classifier.procpool.process_map`,
``decode_processes`` of `Classifier.predict_files`, ``predict --decode-processes``): the results of
a serial decode in input order, bad files as errors, and no worker left behind on a consumer that
stops, an error, Ctrl-C or a killed parent."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from test_decode import celeba_like, recording, with_bad_files
from test_preprocess import png_claiming

from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.classifier.decode import (
    DecodePool,
    decode_pool,
    default_decode_pool,
    process_chunk,
)
from onnxedge.runtime.classifier.preprocess import ImageReadError
from onnxedge.runtime.classifier.procpool import BROKEN, PARENT_POLL_S, process_map
from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import ArgumentError, OnnxEdgeError


@pytest.fixture(autouse=True)
def no_workers_left_behind():
    """Every test here ends with no worker process of this one alive."""
    yield
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not multiprocessing.active_children()


@pytest.fixture(scope="module")
def clf(smile_bundle: Path) -> Classifier:
    return Classifier.from_bundle(smile_bundle, provider="cpu", threads=1)


def square(i: int) -> int:
    return i * i


def fail_at_13(i: int) -> int:
    if i == 13:
        raise RuntimeError("a bug in the decoder at 13")
    return i


def pid_of(_: int) -> int:
    return os.getpid()


def die_at_7(i: int) -> int:
    if i == 7:
        os._exit(9)  # as a worker killed by the system would
    return i


def frozen_objects(_: int) -> int:
    import gc

    return gc.get_freeze_count()


# -- process_map ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers,chunk,ahead", [(1, 1, 1), (2, 3, 8), (3, 16, 64), (4, 5, 2)])
def test_results_come_back_in_input_order(workers, chunk, ahead):
    assert list(process_map(square, range(100), workers=workers, ahead=ahead, chunk=chunk)) == [
        (i, i * i) for i in range(100)
    ]


def test_the_work_is_done_in_other_processes():
    pids = {pid for _, pid in process_map(pid_of, range(40), workers=2, ahead=8, chunk=2)}
    assert pids and os.getpid() not in pids


def test_the_callers_objects_are_frozen_in_the_workers_only():
    """A worker's garbage collector never visits what the caller held (an ONNX Runtime session in
    a reference cycle: its destructor would wait for threads the worker does not have)."""
    import gc

    assert gc.get_freeze_count() == 0
    counts = [n for _, n in process_map(frozen_objects, range(4), workers=2, ahead=4, chunk=1)]
    assert min(counts) > 1000
    assert gc.get_freeze_count() == 0


def test_items_are_taken_lazily_a_window_ahead():
    taken = []

    def source():
        for i in range(1000):
            taken.append(i)
            yield i

    results = process_map(square, source(), workers=2, ahead=10, chunk=5)
    assert next(results) == (0, 0)
    assert len(taken) <= 10 + 5  # the window, and the chunk taken for the result just yielded
    results.close()


def test_an_exception_in_a_worker_comes_out_at_its_turn_and_the_pool_stops():
    results = process_map(fail_at_13, range(100), workers=2, ahead=8, chunk=4)
    got = []
    with pytest.raises(RuntimeError, match="a bug in the decoder at 13"):
        for item, value in results:
            got.append((item, value))
    assert got == [(i, i) for i in range(12)]  # 12 of the 3 whole chunks before 13's
    assert not multiprocessing.active_children()


def test_a_worker_that_dies_is_one_error_and_the_pool_stops():
    with pytest.raises(OnnxEdgeError) as caught:
        list(process_map(die_at_7, range(100), workers=2, ahead=8, chunk=4))
    assert str(caught.value) == BROKEN and "\n" not in BROKEN
    assert not multiprocessing.active_children()


def test_closing_early_stops_the_workers():
    results = process_map(square, range(10_000), workers=2, ahead=32, chunk=4)
    assert next(results) == (0, 0)
    assert multiprocessing.active_children()
    results.close()
    assert not multiprocessing.active_children()


# -- the choice of pool ---------------------------------------------------------------------------


def test_one_count_or_the_other_or_the_default():
    assert decode_pool(3, None) == DecodePool(3)
    assert decode_pool(None, 2) == DecodePool(2, processes=True)
    assert decode_pool(None, None, 4) == DecodePool(4, processes=True, batches=True)
    assert decode_pool(None, None) == default_decode_pool()
    both = r"got decode_threads \(2\) and decode_processes \(2\)$"
    with pytest.raises(ArgumentError, match=both):
        decode_pool(2, 2)
    both = r"got decode_processes \(2\) and batch_processes \(3\)$"
    with pytest.raises(ArgumentError, match=both):
        decode_pool(None, 2, 3)


def test_a_chunk_is_a_quarter_of_a_batch_from_1_to_16():
    assert [process_chunk(b) for b in (1, 4, 8, 64, 1000)] == [1, 1, 2, 16, 16]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"decode_processes": 0}, "expected decode_processes from 1 to 64 or None, got 0"),
        ({"decode_processes": 65}, "expected decode_processes from 1 to 64 or None, got 65"),
        ({"decode_processes": 2, "decode_threads": 2}, "got decode_threads .2. and decode_pro"),
        ({"batch_processes": 0}, "expected batch_processes from 1 to 64 or None, got 0"),
        ({"batch_processes": 1, "decode_threads": 1}, "got decode_threads .1. and batch_pro"),
    ],
)
def test_decode_processes_is_checked_at_the_call(clf, kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        clf.predict_files([], **kwargs)


# -- predict_files --------------------------------------------------------------------------------


def items_with_bad_ones(tmp_path: Path) -> tuple[list[Any], dict[int, str]]:
    """40 CelebA-like files with bad ones among them and a folder that could not be listed
    (an `ImageReadError` item); {position: expected error}."""
    paths, bad = with_bad_files(tmp_path, celeba_like(tmp_path / "faces", 40))
    unlisted = ImageReadError(tmp_path / "locked", "cannot list the directory: Permission denied")
    items = [*paths[:3], unlisted, *paths[3:]]
    bad = {(p if p < 3 else p + 1): message for p, message in bad.items()}
    bad[3] = "cannot list the directory"
    return items, bad


def assert_each_in_place(results: list[Any], items: list[Any], bad: dict[int, str]) -> None:
    """Each item's result in its place: the bad ones with their error, the others predicted."""
    assert [r.file for r in results] == [os.fspath(getattr(p, "path", p)) for p in items]
    for position, result in enumerate(results):
        if position in bad:
            assert not result and bad[position] in result.error, (position, result)
        else:
            assert result and result.prediction is not None, (position, result)


@pytest.mark.parametrize("processes,batch_size", [(1, 4), (2, 3), (3, 32)])
def test_the_pixels_and_results_are_those_of_a_serial_decode(clf, tmp_path, processes, batch_size):
    items, bad = items_with_bad_ones(tmp_path)
    serial_clf, serial_session = recording(clf)
    pool_clf, pool_session = recording(clf)
    serial = list(serial_clf.predict_files(items, batch_size=batch_size, decode_threads=1))
    pooled = list(pool_clf.predict_files(items, batch_size=batch_size, decode_processes=processes))
    assert pooled == serial  # files, errors, probabilities (exact floats), labels, in order
    assert len(pool_session.batches) == len(serial_session.batches) > 1
    for mine, theirs in zip(pool_session.batches, serial_session.batches, strict=True):
        assert np.array_equal(mine, theirs)
    assert_each_in_place(pooled, items, bad)


def test_fast_decoding_in_processes_gives_the_serial_fast_results(smile_bundle, tmp_path):
    fast = Classifier.from_bundle(smile_bundle, provider="cpu", threads=1, decode="fast")
    paths = celeba_like(tmp_path / "faces", 24)
    serial = list(fast.predict_files(paths, batch_size=5, decode_threads=1))
    assert list(fast.predict_files(paths, batch_size=5, decode_processes=2)) == serial


@pytest.mark.parametrize("threads", [1, None])  # one batch at a time; concurrent batches
def test_decoder_processes_read_a_bounded_number_of_paths_ahead(
    smile_bundle, tmp_path, monkeypatch, threads
):
    """Memory stays bounded however many paths there are: before the first result, at most the
    decoding window (`process_window`: `PROCESS_WINDOW_BATCHES` batches) and the batches of
    `stream_files` (the one being filled, those running and one waiting) are read."""
    from onnxedge.runtime.classifier import loader
    from onnxedge.runtime.classifier.files import PROCESS_WINDOW_BATCHES, process_window

    monkeypatch.setattr(loader, "usable_cpus", lambda: 2)
    clf = Classifier.from_bundle(smile_bundle, provider="cpu", threads=threads)
    paths = celeba_like(tmp_path / "faces", 6) * 400
    source = _Counted(paths)
    batch = 4
    results = clf.predict_files(source, batch_size=batch, decode_processes=1)
    assert next(results)
    runs = 1 if threads else 2
    window = process_window(batch, 1, 64 * 64 * 3)  # the smile model's uint8 pixels
    assert window == PROCESS_WINDOW_BATCHES * batch
    assert window <= source.taken <= window + (runs + 2) * batch, source.taken
    assert len(list(results)) == len(paths) - 1 and source.taken == len(paths)


def test_the_decoding_window_is_bounded_in_bytes():
    from onnxedge.runtime.classifier.files import WINDOW_BYTES, process_window

    assert process_window(64, 1, 64 * 64 * 3) == 3 * 64
    assert process_window(64, 2, 224 * 224 * 3) == 3 * 64
    assert process_window(256, 2, 224 * 224 * 3) == 256  # three would be 116 MB
    assert WINDOW_BYTES < 2 * 256 * 224 * 224 * 3
    assert process_window(64, 1, None) == 64  # a size not known: the next batch only
    assert process_window(4, 8, 10**9) == 2 * 8 * 1  # two chunks a process, whatever the size


class _Counted:
    """An iterator over ``items`` that counts how many were taken."""

    def __init__(self, items: list[Any]) -> None:
        self._items = iter(items)
        self.taken = 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        item = next(self._items)
        self.taken += 1
        return item


@pytest.mark.parametrize("pool", [{"decode_processes": 2}, {"batch_processes": 2}])
def test_a_consumer_that_stops_stops_the_workers(smile_bundle, tmp_path, pool):
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")  # batch processes need its recipe
    paths = celeba_like(tmp_path / "faces", 10) * 50
    results = clf.predict_files(paths, batch_size=4, **pool)
    assert next(results)
    assert multiprocessing.active_children()
    results.close()
    assert not multiprocessing.active_children()


# -- the command ----------------------------------------------------------------------------------


def predict(*args: object):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def test_predict_prints_the_same_lines_with_threads_or_processes(smile_bundle, tmp_path):
    """Bombs among them: PIL's warning, which predict makes an error for the duration of the
    command, is an error in the decoder processes too."""
    paths, _ = with_bad_files(tmp_path, celeba_like(tmp_path / "faces", 30))
    (tmp_path / "warned.png").write_bytes(png_claiming(10000, 10000))  # PIL warns: an error
    paths[5:5] = [tmp_path / "warned.png"]
    serial = predict(smile_bundle, *paths, "--batch-size", 4, "--decode-threads", 1)
    pooled = predict(smile_bundle, *paths, "--batch-size", 4, "--decode-processes", 2)
    assert serial.exit_code == pooled.exit_code == 1, pooled.output
    assert pooled.stdout == serial.stdout
    assert "ERROR\trefused as a decompression bomb" in pooled.stdout.splitlines()[5]


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def start_predict(
    smile_bundle: Path,
    tmp_path: Path,
    times: int = 500,
    pool: tuple[str, ...] = ("--decode-processes", "2"),
) -> tuple[subprocess.Popen, Path]:
    """`onnxedge predict` over the folder named ``times`` times (20 files each) with the
    ``pool`` options, started and classifying: its first line written. Its stdout goes to
    ``tmp_path / "out.txt"`` (a file, so that every line written can be counted afterwards)."""
    folder = tmp_path / "faces"
    celeba_like(folder, 20)
    args = ["predict", str(smile_bundle), *[str(folder)] * times, *pool]
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from onnxedge.runtime.cli import main; main()", *args],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
        )
    deadline = time.monotonic() + 120
    while "\n" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.read_text().startswith(str(folder)), proc.poll()  # classifying has begun
    return proc, out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize(
    "pool",
    [
        ("--decode-processes", "2"),
        # predict's default for small files on 2 CPUs or more (these noisy test files average
        # 40 KB, which the default decodes on threads: `large_files`)
        ("--batch-processes", "2"),
    ],
)
def test_a_real_ctrl_c_exits_130_and_leaves_no_worker(smile_bundle, tmp_path, pool):
    """SIGINT to the command and its workers at once, as a terminal's Ctrl-C sends it to the
    whole process group: exit 130, one line on stderr (no worker's traceback), no worker left."""
    proc, out = start_predict(smile_bundle, tmp_path, pool=pool)
    try:
        workers = children_of(proc.pid)
        assert len(workers) >= 2
        for pid in [proc.pid, *workers]:
            os.kill(pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "onnxedge: interrupted"
    assert len(out.read_text().splitlines()) < 10_000
    assert wait_until_gone(workers, 10) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_ctrl_c_that_reaches_only_the_workers_changes_nothing(smile_bundle, tmp_path):
    """The workers ignore SIGINT: only the command decides to stop."""
    proc, out = start_predict(smile_bundle, tmp_path, times=50)
    try:
        workers = children_of(proc.pid)
        assert len(workers) >= 2
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Interrupt" not in err
    assert len(out.read_text().splitlines()) == 1_000


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_workers_exit_when_the_command_is_killed(smile_bundle, tmp_path):
    """SIGKILL leaves the command no ``finally``: its workers see their parent gone and exit."""
    proc, _ = start_predict(smile_bundle, tmp_path)
    try:
        workers = children_of(proc.pid)
        assert len(workers) >= 2
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert wait_until_gone(workers, 20 * PARENT_POLL_S + 10) == []
