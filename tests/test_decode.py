"""Image files decoded in a thread pool while the model runs (`onnxedge.runtime.classifier.decode`,
and
`Classifier.predict_files` on top of it): the same pixels and results as one file after another,
in order, bad files reported one by one, memory bounded, threads stopped on an error, an
interrupt or a consumer that stops."""

from __future__ import annotations

import random
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_preprocess import png_claiming

import onnxedge.runtime.classifier.files as classifier_files
from onnxedge.runtime.classifier.classifier import Classifier, decode_window
from onnxedge.runtime.classifier.decode import default_decode_workers, ordered_map
from onnxedge.runtime.classifier.preprocess import load_image
from onnxedge.runtime.cli import main
from onnxedge.runtime.engines.onnxruntime.session import MAX_THREADS

POOL = "onnxedge-decode"


def decode_threads_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(POOL)]


@pytest.fixture(autouse=True)
def no_threads_left_behind():
    """Every test here ends with the pool's threads gone, whatever happened in it."""
    yield
    deadline = time.monotonic() + 5
    while decode_threads_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not decode_threads_alive()


# -- ordered_map ----------------------------------------------------------------------------------


def test_results_come_back_in_input_order_whatever_finishes_first():
    rng = random.Random(0)
    delays = [rng.uniform(0, 0.01) for _ in range(60)]

    def slow_square(i: int) -> int:
        time.sleep(delays[i])
        return i * i

    got = list(ordered_map(slow_square, range(60), workers=4, ahead=8))
    assert got == [(i, i * i) for i in range(60)]


def test_the_workers_run_at_once():
    """Two items that each wait for the other: only threads running together get past it."""
    barrier = threading.Barrier(2, timeout=5)
    names = []

    def meet(i: int) -> int:
        barrier.wait()
        names.append(threading.current_thread().name)
        return i

    assert [r for _, r in ordered_map(meet, range(4), workers=2, ahead=2)] == [0, 1, 2, 3]
    assert all(n.startswith(POOL) for n in names)


def test_one_worker_is_the_calling_thread_one_item_at_a_time():
    taken, threads = [], []

    def source():
        for i in range(5):
            taken.append(i)
            yield i

    def fn(i: int) -> int:
        threads.append(threading.current_thread())
        return -i

    results = ordered_map(fn, source(), workers=1, ahead=100)
    assert next(results) == (0, 0) and taken == [0]
    assert list(results) == [(i, -i) for i in range(1, 5)]
    assert set(threads) == {threading.current_thread()}


@pytest.mark.parametrize("workers,ahead", [(2, 3), (4, 4), (3, 16)])
def test_at_most_ahead_items_are_taken_before_their_results_are_yielded(workers, ahead):
    taken = 0

    def source():
        nonlocal taken
        for i in range(100):
            taken += 1
            yield i

    window = max(ahead, workers)
    yielded = 0
    for _ in ordered_map(lambda i: i, source(), workers=workers, ahead=ahead):
        yielded += 1
        assert taken - yielded <= window, (taken, yielded)
    assert yielded == 100


def test_an_exception_stops_the_pool_at_its_turn():
    calls = []

    def fn(i: int) -> int:
        calls.append(i)
        if i == 5:
            raise RuntimeError("broken decoder")
        return i

    results = ordered_map(fn, range(1000), workers=3, ahead=6)
    got = []
    with pytest.raises(RuntimeError, match="broken decoder"):
        for _, r in results:
            got.append(r)
    assert got == [0, 1, 2, 3, 4]
    assert len(calls) <= 5 + 1 + 6  # nothing started far beyond the window


def test_an_interrupt_in_a_worker_reaches_the_caller():
    def fn(i: int) -> int:
        if i == 3:
            raise KeyboardInterrupt
        return i

    with pytest.raises(KeyboardInterrupt):
        list(ordered_map(fn, range(100), workers=2, ahead=4))


def test_closing_early_cancels_what_has_not_started():
    calls = []
    results = ordered_map(lambda i: calls.append(i) or i, range(10_000), workers=2, ahead=4)
    assert next(results) == (0, 0)
    results.close()
    assert len(calls) <= 1 + 1 + 4


def test_default_workers_are_the_usable_cpus_capped():
    assert 1 <= default_decode_workers() <= 8


# -- Classifier.predict_files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def clf(smile_bundle: Path) -> Classifier:
    return Classifier.from_bundle(smile_bundle, provider="cpu", threads=1)


def celeba_like(root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 178x218 JPEGs (CelebA's size) with a few PNGs and other sizes among them."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        size = (218, 178) if i % 5 else (int(rng.integers(40, 300)), int(rng.integers(40, 300)))
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        path = root / (f"{i:03d}.jpg" if i % 7 else f"{i:03d}.png")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def with_bad_files(root: Path, paths: list[Path]) -> tuple[list[Path], dict[int, str]]:
    """``paths`` with bad files put among them; {position: expected error}."""
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.png").write_text("not a picture")
    half = paths[0].read_bytes()
    (root / "cut.jpg").write_bytes(half[: len(half) // 2])
    order = list(paths)
    bad = {
        0: (root / "empty.jpg", "found an empty file (0 bytes)"),
        7: (root / "missing.jpg", "found nothing there"),
        8: (root / "text.png", "found no format PIL reads"),
        20: (root / "cut.jpg", "cannot decode the image"),
    }
    for position, (path, _) in sorted(bad.items()):
        order.insert(position, path)
    order.append(root / "missing.jpg")
    bad[len(order) - 1] = (root / "missing.jpg", "found nothing there")
    return order, {position: message for position, (_, message) in bad.items()}


class RecordingSession:
    """The real session, with a copy of every batch it is given."""

    def __init__(self, session) -> None:
        self._session = session
        self.batches: list[np.ndarray] = []

    def run(self, names, feed):
        (x,) = feed.values()
        self.batches.append(np.array(x, copy=True))
        return self._session.run(names, feed)

    def __getattr__(self, name):
        return getattr(self._session, name)


def recording(clf: Classifier) -> tuple[Classifier, RecordingSession]:
    session = RecordingSession(clf.session)
    return Classifier(session, clf.manifest, provider=clf.provider, path=clf.path), session


@pytest.mark.parametrize("threads,batch_size", [(2, 4), (4, 3), (3, 32)])
def test_the_pixels_and_results_are_those_of_a_serial_decode(clf, tmp_path, threads, batch_size):
    paths, bad = with_bad_files(tmp_path, celeba_like(tmp_path / "faces", 40))
    serial_clf, serial_session = recording(clf)
    pool_clf, pool_session = recording(clf)
    serial = list(serial_clf.predict_files(paths, batch_size=batch_size, decode_threads=1))
    pooled = list(pool_clf.predict_files(paths, batch_size=batch_size, decode_threads=threads))
    assert pooled == serial  # files, errors, probabilities (exact floats), labels, in order
    assert [r.file for r in pooled] == [str(p) for p in paths]
    assert len(pool_session.batches) == len(serial_session.batches) > 1
    for mine, theirs in zip(pool_session.batches, serial_session.batches, strict=True):
        assert mine.dtype == np.float32 and np.array_equal(mine, theirs)
    # the serial path is load_image itself
    good = [p for i, p in enumerate(paths) if i not in bad]
    stacked = np.concatenate(serial_session.batches)
    assert np.array_equal(stacked, np.stack([load_image(p, clf.preprocessing) for p in good]))
    for position, result in enumerate(pooled):
        if position in bad:
            assert not result and bad[position] in result.error, (position, result)
        else:
            assert result and result.prediction is not None, (position, result)


def watch_loads(monkeypatch, fail_at: int | None = None, raised=RuntimeError) -> list[str]:
    """The file pipeline's loader (`FileLoader`, whichever path a file takes in it) replaced by
    itself, noting the thread of each call (the list returned); the ``fail_at``-th call raises
    ``raised`` instead."""
    calls: list[str] = []
    lock = threading.Lock()
    real = classifier_files.FileLoader.__call__

    def spy(self, path, *args, **kwargs):
        with lock:
            calls.append(threading.current_thread().name)
            fail = len(calls) == fail_at
        if fail:
            raise raised("stop")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(classifier_files.FileLoader, "__call__", spy)
    return calls


def test_files_are_decoded_in_the_pool(clf, tmp_path, monkeypatch):
    """Not in the thread that runs the model: the check that the pool is used at all."""
    decoders = watch_loads(monkeypatch)
    paths = celeba_like(tmp_path, 12)
    assert all(clf.predict_files(paths, batch_size=4, decode_threads=3))
    assert decoders and all(name.startswith(POOL) for name in decoders), decoders
    decoders.clear()
    assert all(clf.predict_files(paths, batch_size=4, decode_threads=1))
    assert set(decoders) == {threading.current_thread().name}


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_memory_stays_bounded_however_many_files(clf, tmp_path, threads):
    """Paths are taken at most a batch and the decode window ahead of the results."""
    paths = celeba_like(tmp_path, 6) * 15
    batch_size = 4
    bound = batch_size + decode_window(batch_size, threads)
    assert bound <= 2 * batch_size + 2 * threads  # the window itself is about one batch
    taken = 0

    def source():
        nonlocal taken
        for p in paths:
            taken += 1
            yield p

    results = clf.predict_files(source(), batch_size=batch_size, decode_threads=threads)
    assert taken == 0  # nothing happens before the first result is asked for
    done = 0
    for result in results:
        done += 1
        assert result and taken - done <= bound, (taken, done, bound)
    assert done == len(paths)
    if threads == 1:
        assert decode_window(batch_size, threads) == 0  # one file after another, as before


@pytest.mark.parametrize(
    "value,message",
    [
        (0, "expected decode_threads from 1 to 1024 or None, got 0"),
        (-1, "got -1"),
        (2.0, "got 2.0"),
        (True, "got True"),
        ("2", "got '2'"),
        (MAX_THREADS + 1, f"got {MAX_THREADS + 1}"),
    ],
)
def test_decode_threads_are_checked_at_the_call(clf, value, message):
    with pytest.raises(ValueError, match=message):
        clf.predict_files([], decode_threads=value)


def test_numpy_integers_are_decode_threads_too(clf, tmp_path):
    paths = celeba_like(tmp_path, 3)
    assert list(clf.predict_files(paths, decode_threads=np.int64(2))) == list(
        clf.predict_files(paths, decode_threads=1)
    )


@pytest.mark.parametrize("raised", [KeyboardInterrupt, RuntimeError])
def test_an_interrupt_or_a_bug_while_decoding_stops_every_thread(
    clf, tmp_path, monkeypatch, raised
):
    paths = celeba_like(tmp_path, 10) * 10
    calls = watch_loads(monkeypatch, fail_at=30, raised=raised)
    got = []
    with pytest.raises(raised):
        for result in clf.predict_files(paths, batch_size=4, decode_threads=3):
            got.append(result)
    assert len(got) <= 30 and all(got)
    assert len(calls) < len(paths)  # the rest was never decoded
    # the autouse fixture checks that no decoding thread is left


def test_a_consumer_that_stops_stops_the_decoding(clf, tmp_path, monkeypatch):
    """An interrupt in the caller's own code (say, Ctrl-C while it prints a line): closing the
    generator cancels what has not started."""
    paths = celeba_like(tmp_path, 8) * 50
    calls = watch_loads(monkeypatch)
    results = clf.predict_files(paths, batch_size=4, decode_threads=2)
    assert next(results)
    results.close()
    after = len(calls)
    assert after <= 4 + decode_window(4, 2) + 2
    time.sleep(0.1)
    assert len(calls) == after and not decode_threads_alive()


def test_the_cpu_session_does_not_spin_between_runs(clf):
    options = clf.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


# -- onnxedge predict -----------------------------------------------------------------------------


def predict(*args: object):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def test_predict_prints_the_same_lines_with_any_number_of_decoders(smile_bundle, tmp_path):
    """Bombs among them: PIL's warning, which predict makes an error for the duration of the
    command, is raised in the decoding threads too."""
    paths, _ = with_bad_files(tmp_path, celeba_like(tmp_path / "faces", 30))
    (tmp_path / "warned.png").write_bytes(png_claiming(10000, 10000))  # PIL warns: an error
    (tmp_path / "large.png").write_bytes(png_claiming(9000, 9000))  # above --max-pixels
    paths[5:5] = [tmp_path / "warned.png", tmp_path / "large.png"]
    outputs = []
    for threads in ("1", "2", "5"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = predict(smile_bundle, *paths, "--batch-size", 4, "--decode-threads", threads)
        assert result.exit_code == 1, result.output
        assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] == outputs[2]
    lines = outputs[0].splitlines()
    assert len(lines) == len(paths)
    assert "ERROR\trefused as a decompression bomb" in lines[5]
    assert "more than the limit of 64,000,000" in lines[6]


@pytest.mark.parametrize("value", ["0", "-2", str(MAX_THREADS + 1), "two", "1.5"])
def test_bad_decode_threads_are_usage_errors(smile_bundle, tmp_path, value):
    result = predict(smile_bundle, tmp_path, "--decode-threads", value)
    assert result.exit_code == 2, result.output
    assert "--decode-threads" in result.output and "Traceback" not in result.output


def test_ctrl_c_while_printing_exits_130_and_stops_the_decoding(
    smile_bundle, tmp_path, monkeypatch
):
    from onnxedge.runtime.cli import predict as predict_module

    paths = celeba_like(tmp_path, 8) * 20
    real = predict_module.format_result
    lines = 0

    def interrupted(*args, **kwargs):
        nonlocal lines
        lines += 1
        if lines == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "format_result", interrupted)
    result = predict(smile_bundle, *paths, "--batch-size", 4, "--decode-threads", 3)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == "onnxedge: interrupted"
    assert len(result.stdout.splitlines()) == 4
    assert not decode_threads_alive()  # closed by the command, not left to the fixture's wait


def test_a_real_ctrl_c_stops_predict_at_once(smile_bundle, tmp_path):
    """SIGINT to the command while files are decoded and classified: exit 130 with one line on
    stderr, the lines printed so far kept, and no wait for the remaining files."""
    import signal
    import subprocess
    import sys

    folder = tmp_path / "faces"
    celeba_like(folder, 20)
    # the folder named 500 times: 10,000 files, far more than are classified before the signal
    args = ["predict", str(smile_bundle), *[str(folder)] * 500, "--decode-threads", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from onnxedge.runtime.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith(str(folder))  # classifying has begun
        proc.send_signal(signal.SIGINT)
        # read while waiting: a command that printed a pipe's worth of lines before the signal
        # (a loaded machine) blocks at exit flushing stdout until someone reads it
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    code = proc.returncode
    assert code == 130, err
    assert err.strip() == "onnxedge: interrupted"
    assert len(rest.splitlines()) + 1 < 10_000


@pytest.mark.parametrize(
    ("name", "argument", "words"),
    [
        ("batches", "batch_processes", "3 batch processes"),
        ("processes", "decode_processes", "3 decoder processes"),
        ("threads", "decode_threads", "3 decoding threads"),
    ],
)
def test_a_pool_by_name_its_argument_and_its_words(name, argument, words):
    from onnxedge.runtime.classifier.decode import DecodePool, decode_pool, pool_arguments
    from onnxedge.runtime.errors import ArgumentError

    pool = DecodePool.named(name, 3)
    assert pool.name == name and pool.describe() == words
    assert pool_arguments(name, 3) == {argument: 3}
    # the argument predict_files takes gives the same pool back
    counts = [pool_arguments(name, 3).get(a) for a in ("decode_threads", "decode_processes")]
    assert decode_pool(*counts, pool_arguments(name, 3).get("batch_processes")) == pool
    with pytest.raises(ArgumentError, match="unknown decode pool 'fibres'"):
        DecodePool.named("fibres", 3)
