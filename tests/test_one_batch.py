"""A run of one batch or fewer files, or of large files, with no pool asked for, decodes on
threads of the calling process and runs its batches on the classifier's own session
(`threads_pool`): no decoder or batch process is started, and OpenVINO compiles no streams.
More files of the usual size, or a pool asked for, take the pool as before. `predict_files` says
which ran (`FilesRun`)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxedge.runtime.classifier import files as files_module
from onnxedge.runtime.classifier import loader
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.classifier.decode import (
    LARGE_FILE_BYTES,
    DecodePool,
    default_decode_pool,
    default_decode_workers,
    large_files,
    threads_pool,
)
from onnxedge.runtime.classifier.files import FilesRun
from onnxedge.runtime.engines.openvino.loader import unavailable_reason


@pytest.fixture
def photos(tmp_path):
    """5 small PNGs (flat colours, a few hundred bytes each) of 5 sizes."""
    paths = [str(tmp_path / f"{i}.png") for i in range(5)]
    for i, path in enumerate(paths):
        Image.new("RGB", (40 + 30 * i, 60), (50 * i, 120, 200 - 40 * i)).save(path)
    return paths


@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.setattr(loader, "usable_cpus", lambda: 2)
    monkeypatch.setattr("onnxedge.runtime.classifier.decode.usable_cpus", lambda: 2)


@pytest.fixture
def no_processes(monkeypatch):
    """Every start of a process pool recorded (and still run)."""
    started = []
    real = files_module.process_map

    def spy(*args, **kwargs):
        started.append(kwargs.get("workers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(files_module, "process_map", spy)
    return started


def test_the_pool_for_files_that_fit_in_one_batch_is_threads(smile_bundle, two_cpus):
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    assert threads_pool() == DecodePool(default_decode_workers()) == DecodePool(2)
    assert clf.file_pool(files=4, batch_size=4) == threads_pool()
    assert clf.file_pool(files=0, batch_size=4) == threads_pool()
    assert clf.file_pool(files=5, batch_size=4) == default_decode_pool(True)
    assert clf.file_pool() == default_decode_pool(True)  # the number unknown
    assert clf.file_pool(decode_processes=1, files=1, batch_size=4) == DecodePool(1, True)


def test_a_list_that_fits_in_one_batch_starts_no_process(
    smile_bundle, photos, two_cpus, no_processes
):
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    serial = [r.to_dict() for r in clf.predict_files(photos, batch_size=8, decode_threads=1)]
    run = clf.predict_files(photos, batch_size=8)
    assert isinstance(run, FilesRun)
    assert run.pool == DecodePool(2) and run.batches is None  # known at the call
    assert [r.to_dict() for r in run] == serial and no_processes == []
    # one more file than a batch: the default pool, batch processes on this classifier
    more = clf.predict_files(photos, batch_size=4)
    assert more.pool == default_decode_pool(True) and more.pool.batches
    assert [r.to_dict() for r in more] == serial and no_processes == [2]


def test_an_iterator_is_read_one_batch_ahead_before_the_pool_is_chosen(
    smile_bundle, photos, two_cpus, no_processes
):
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    read = []

    def lazily(paths):
        for p in paths:
            read.append(p)
            yield p

    run = clf.predict_files(lazily(photos), batch_size=8)
    assert run.pool is None and read == []  # nothing read at the call
    first = next(run)
    assert run.pool == DecodePool(2) and first.file == photos[0] and no_processes == []
    assert len(list(run)) == 4
    more = clf.predict_files(lazily(photos), batch_size=4)
    assert len(list(more)) == 5 and more.pool.batches and no_processes == [2]
    # a pool asked for is not second-guessed
    read.clear()
    asked = clf.predict_files(lazily(photos), batch_size=8, decode_processes=1)
    next(asked)
    asked.close()
    assert asked.pool == DecodePool(1, processes=True) and no_processes[-1] == 1


def test_a_run_closed_before_it_starts_starts_nothing(smile_bundle, photos, no_processes):
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    run = clf.predict_files(iter(photos), batch_size=2)
    run.close()
    assert list(run) == [] and run.pool is None and no_processes == []


@pytest.mark.skipif(unavailable_reason() is not None, reason=f"openvino: {unavailable_reason()}")
def test_predict_of_one_file_on_openvino_compiles_no_streams(
    smile_bundle, photos, two_cpus, monkeypatch
):
    from onnxedge.runtime.cli import main

    compiled = []
    real = loader.OpenVinoStreams.__call__
    monkeypatch.setattr(
        loader.OpenVinoStreams,
        "__call__",
        lambda self, runs=1: compiled.append(runs) or real(self, runs),
    )
    args = ["predict", str(smile_bundle), "--engines", "openvino"]
    one = CliRunner().invoke(main, [*args, photos[0]])
    assert one.exit_code == 0, one.output
    summary = one.stderr.strip().splitlines()[-1]
    assert "(LATENCY, " in summary and "batches at once" not in summary
    assert compiled == []
    many = CliRunner().invoke(main, [*args, "--batch-size", "2", *photos])
    assert many.exit_code == 0, many.output
    assert "; 2 batches at once on openvino CPU f32 (THROUGHPUT, " in many.stderr
    assert compiled and set(compiled) == {2}


def large(folder, count):
    """``count`` PNGs of noise, each larger than `LARGE_FILE_BYTES`."""
    folder.mkdir()
    rng = np.random.default_rng(2)
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)).save(path)
        assert path.stat().st_size > LARGE_FILE_BYTES
        paths.append(str(path))
    return paths


def test_large_files_are_the_ones_that_average_the_size(tmp_path, photos):
    big = large(tmp_path / "big", 2)
    assert large_files(big) and not large_files(photos) and not large_files([])
    # what is not a file there is left out of the mean, not counted as 0 bytes
    assert large_files([*big, str(tmp_path / "missing.jpg"), 42])
    assert not large_files([str(tmp_path / "missing.jpg")])
    assert not large_files(photos + big[:1])  # the mean, not any one file


def test_large_files_are_decoded_by_threads_over_several_batches(
    smile_bundle, photos, tmp_path, two_cpus, no_processes
):
    big = large(tmp_path / "big", 5)
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    serial = [r.to_dict() for r in clf.predict_files(big, batch_size=2, decode_threads=1)]
    run = clf.predict_files(big, batch_size=2)  # three batches
    assert run.pool == threads_pool() and run.batches is None
    assert [r.to_dict() for r in run] == serial and no_processes == []
    lazy = clf.predict_files(iter(big), batch_size=2)
    assert [r.to_dict() for r in lazy] == serial and lazy.pool == threads_pool()
    # the same number of small files takes the processes; a pool asked for is kept
    assert clf.predict_files(photos, batch_size=2).pool == default_decode_pool(True)
    asked = clf.predict_files(big, batch_size=2, batch_processes=2)
    assert asked.pool == DecodePool(2, processes=True, batches=True)
    asked.close()
