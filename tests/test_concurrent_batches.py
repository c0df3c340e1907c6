"""`predict_files` runs several batches at once on a one-thread session where files are decoded
in processes and ONNX Runtime's CPU threads were left to the default, and on OpenVINO streams of
one thread each where its threads were: the same results, in the same order, as one batch at a
time."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from onnxedge.runtime.classifier import loader
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.classifier.decode import DecodePool
from onnxedge.runtime.classifier.files import (
    MAX_CONCURRENT_BATCHES,
    concurrent_batches,
    files_batches,
)
from onnxedge.runtime.engines.openvino.loader import unavailable_reason


def test_several_batches_only_with_decoder_processes_two_cpus_and_a_one_thread_session():
    processes, threads = DecodePool(1, processes=True), DecodePool(2)
    assert concurrent_batches(processes, 2, one_thread=True) == 2
    assert concurrent_batches(processes, 64, one_thread=True) == MAX_CONCURRENT_BATCHES
    assert concurrent_batches(threads, 2, one_thread=True) == 1
    assert concurrent_batches(processes, 1, one_thread=True) == 1
    assert concurrent_batches(processes, 2, one_thread=False) == 1


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(23):
        path = tmp_path / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    (tmp_path / "05.png").write_bytes(b"not a picture")  # a bad file keeps its place
    return paths


def test_concurrent_batches_give_one_batch_at_a_times_results_in_order(
    smile_bundle, photos, monkeypatch
):
    monkeypatch.setattr(loader, "usable_cpus", lambda: 3)
    made = []
    real = loader.session_for
    monkeypatch.setattr(loader, "session_for", lambda *a, **k: made.append(a) or real(*a, **k))
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    assert clf.one_thread is not None and len(made) == 1
    serial = [r.to_dict() for r in clf.predict_files(photos, batch_size=4, decode_threads=1)]
    assert len(made) == 1  # no second session where one batch runs at a time
    runs = []
    real_stream = loader.stream_files
    monkeypatch.setattr(
        loader,
        "stream_files",
        lambda *a: runs.append(a[5]) or real_stream(*a),
    )
    concurrent = [r.to_dict() for r in clf.predict_files(photos, batch_size=4, decode_processes=1)]
    assert runs == [3] and made[-1][1:] == ("cpu", 1)  # three batches, a 1-thread session
    assert concurrent == serial
    assert "error" in concurrent[5] and sum("error" in r for r in concurrent) == 1


def test_threads_given_keep_one_batch_at_a_time(smile_bundle, photos, monkeypatch):
    clf = Classifier.from_bundle(smile_bundle, provider="cpu", threads=2)
    assert clf.one_thread is None
    assert loader.file_runner(clf, 2) is clf
    results = list(clf.predict_files(photos, batch_size=4, decode_processes=1))
    assert len(results) == len(photos)


@pytest.mark.skipif(unavailable_reason() is not None, reason=f"openvino: {unavailable_reason()}")
def test_openvino_runs_concurrent_batches_on_streams_of_one_thread(
    smile_bundle, photos, monkeypatch
):
    """Each batch in flight on a stream of its own (a second compile, THROUGHPUT with as many
    streams and threads as batches), STREAM_RUN images a call; the same results as one batch at
    a time on the LATENCY compile."""
    monkeypatch.setattr(loader, "usable_cpus", lambda: 2)
    clf = Classifier.from_bundle(smile_bundle, provider="cpu", engine="openvino")
    assert isinstance(clf.one_thread, loader.OpenVinoStreams)
    assert clf.one_thread.run == loader.STREAM_RUN == 32
    serial = [r.to_dict() for r in clf.predict_files(photos, batch_size=4, decode_threads=1)]
    calls = []
    real_rows = loader.prediction_rows
    monkeypatch.setattr(
        loader,
        "prediction_rows",
        lambda runner, threshold, run: (
            calls.append((runner.session, run)) or real_rows(runner, threshold, run)
        ),
    )
    concurrent = [r.to_dict() for r in clf.predict_files(photos, batch_size=4, decode_processes=1)]
    assert concurrent == serial
    ((session, run),) = calls
    assert run == 32 and session is clf.one_thread(2) and session is not clf.session
    effective = session.settings
    assert effective["performance_hint"] == "THROUGHPUT"
    assert effective["num_streams"] == effective["inference_num_threads"] >= 1
    assert "THROUGHPUT" in session.describe()
    described = files_batches(clf, DecodePool(1, processes=True), 2)
    assert described.startswith("2 batches at once on openvino CPU f32 (THROUGHPUT, ")
    assert described.endswith(", 32 images a call")
    assert files_batches(clf, DecodePool(2), 2) is None
    # threads given: one batch at a time on the classifier's own compile
    given = Classifier.from_bundle(smile_bundle, provider="cpu", engine="openvino", threads=2)
    assert given.one_thread is None and loader.file_runner(given, 2) is given


@pytest.mark.skipif(unavailable_reason() is not None, reason=f"openvino: {unavailable_reason()}")
def test_predicts_summary_names_the_session_concurrent_batches_ran_on(
    smile_bundle, photos, monkeypatch
):
    from click.testing import CliRunner

    from onnxedge.runtime.cli import main

    monkeypatch.setattr(loader, "usable_cpus", lambda: 2)
    folder = str(photos[0].parent)

    def summary(*args: str) -> str:
        result = CliRunner().invoke(main, ["predict", str(smile_bundle), folder, *args])
        assert result.exit_code == 1, result.output  # 05.png is not a picture
        return result.stderr.strip().splitlines()[-1]

    ov = summary("--engines", "openvino", "--decode-processes", "1")
    assert ov.startswith("23 files: 22 classified, 1 failed (openvino CPU f32 (LATENCY, ")
    assert "; 2 batches at once on openvino CPU f32 (THROUGHPUT, " in ov
    ort = summary("--decode-processes", "1")
    assert ort.endswith(
        "(CPUExecutionProvider; 2 batches at once on one ONNX Runtime CPU session of 1 intra-op "
        "thread, 8 images a call)"
    )
    assert summary("--decode-threads", "1").endswith("(CPUExecutionProvider)")  # one at a time
