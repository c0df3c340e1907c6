"""The file pipeline of `onnxedge.runtime.classifier.classifier.Classifier.predict_files`: files
decoded by a pool of threads a window ahead of the batch the model runs, a bad file a failed
`FileResult` while the others go on.

It knows the classifier only by what it is given: a function from a path to the model's input
(`Load`) and one from a stacked batch to a prediction (or an error message) per row
(`PredictRows`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.classifier import fast_jpeg
from onnxedge.runtime.classifier.decode import DecodePool, ordered_map, process_chunk
from onnxedge.runtime.classifier.fast_jpeg import load_scaled
from onnxedge.runtime.classifier.fast_plan import FastPlan, fast_plan
from onnxedge.runtime.classifier.predictions import FileResult, Prediction
from onnxedge.runtime.classifier.preprocess import (
    FAST,
    ImageReadError,
    is_image_name,
    load_image,
    load_pixels,
    pads,
    pillow_pixels,
)
from onnxedge.runtime.classifier.procpool import process_map
from onnxedge.runtime.errors import OnnxEdgeError

# A path -> the image as the model's input (or its pixels), raising ImageReadError.
Load = Callable[[str | Path], np.ndarray]
# A stacked batch -> per row, its prediction or why it has none.
PredictRows = Callable[[np.ndarray], Sequence[Prediction | str]]


@dataclasses.dataclass(frozen=True)
class FileLoader:
    """How the pipeline reads a file (a `Load`): uint8 pixels, scaled a batch at a time
    (`Classifier.model_input`) or by the model itself; where the resize mode pads, each image has
    its own size, so the model's input, image by image. With a plain preprocessing, a JPEG
    simplejpeg takes goes through ``plan`` (`FastPlan`: the same pixels, about a fifth less CPU
    a file than `load_pixels`' checks of the spec for every file), at the fast decode's reduced
    scale or the exact one's full size; every other file through Pillow's path. A plain value,
    so that a decoder process can be handed it."""

    preprocessing: Mapping[str, Any]
    max_pixels: int | None
    decode: str | None
    plan: FastPlan | None = None

    def __call__(self, path: str | Path) -> np.ndarray:
        if self.plan is not None:
            side = self.plan.side if self.decode == FAST else None  # None: the full size
            array = load_scaled(path, side, self.max_pixels)
            if array is not None:
                return self.plan.pixels(array)
            return pillow_pixels(
                path, self.preprocessing, max_pixels=self.max_pixels, draft_side=side
            )
        read = load_image if pads(self.preprocessing) else load_pixels
        return read(path, self.preprocessing, max_pixels=self.max_pixels, decode=self.decode)

    @property
    def image_bytes(self) -> int:
        """The most bytes an image of this loader holds: uint8 pixels [H, W, C], or the model's
        float32 input [C, H, W] where the resize pads; C at most 3 (`process_window`)."""
        height, width = (int(v) for v in self.preprocessing["resize"])
        return height * width * 3 * (4 if pads(self.preprocessing) else 1)


def image_loader(
    preprocessing: Mapping[str, Any], *, max_pixels: int | None, decode: str | None
) -> Load:
    """`FileLoader` for these settings (``preprocessing`` copied into a plain dict)."""
    plain = _plain(preprocessing)
    fast_jpeg.available()  # its check of simplejpeg, once here rather than in every worker
    return FileLoader(plain, max_pixels, decode, fast_plan(plain))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# An item of the pipeline as a decoder gets it: a path, or (name, reason) of one already failed.
Item = str | Path | tuple[str, str]
Decoded = tuple[str, np.ndarray | str]


@dataclasses.dataclass(frozen=True)
class _Decode:
    """A file's name and its decoded image, or the reason it has none."""

    load: Load

    def __call__(self, item: Item) -> Decoded:
        if isinstance(item, tuple):
            return item
        try:
            image = self.load(item)
        except ImageReadError as e:
            return os.fsdecode(item), e.reason
        return os.fsdecode(item), image  # a str name for bytes too (surrogate escapes kept)


def stream_files(
    load: Load,
    predict_rows: PredictRows,
    paths: Iterable[str | Path | ImageReadError],
    batch_size: int,
    pool: DecodePool,
    runs: int = 1,
    batch_rows: Callable[[], PredictRows] | None = None,
) -> Generator[FileResult, None, None]:
    """1. to 3. of `Classifier.predict_files`, its arguments already checked; ``runs`` batches
    at once (`concurrent_batches`), their results still in input order. With a pool of batch
    processes (``pool.batches``), each process makes its own `PredictRows` once with
    ``batch_rows`` and decodes and classifies whole batches (`BatchWork`)."""
    items = (_as_item(p) for p in paths)
    decode = _Decode(load)
    if pool.batches:
        if batch_rows is None:
            raise ValueError("a pool of batch processes needs batch_rows")
        work = BatchWork(decode, batch_rows)
        batches = shared_tail(_batches(items, batch_size), 2 * pool.workers)
        done = process_map(work, batches, workers=pool.workers, ahead=2 * pool.workers, chunk=1)
        with contextlib.closing(done):  # 3.
            for _, results in done:
                yield from results
        return
    if pool.processes:
        ahead = process_window(batch_size, pool.workers, getattr(load, "image_bytes", None))
        chunk = process_chunk(batch_size)
        decoded = process_map(decode, items, workers=pool.workers, ahead=ahead, chunk=chunk)
    else:
        ahead = decode_window(batch_size, pool.workers)
        decoded = ordered_map(decode, items, workers=pool.workers, ahead=ahead)
    batches = _batches((item for _, item in decoded), batch_size)
    with contextlib.closing(decoded):  # 3.: the pool stops with this generator
        if runs <= 1:
            for pending in batches:
                yield from _run_pending(predict_rows, pending)
            return
        run = functools.partial(_pending_results, predict_rows)
        # a batch waiting beside those running: a thread whose batch ends first starts it at
        # once instead of waiting for the batch before its own to be handed back
        for _, results in ordered_map(run, batches, workers=runs, ahead=runs + 1):
            yield from results


class FilesRun(Generator[FileResult, None, None]):
    """What `Classifier.predict_files` returns: its results as a generator (``start`` makes the
    one that yields them), and what runs them once that is decided: ``pool`` (a `DecodePool`)
    and ``batches`` (`files_batches`' words; None where batches run one at a time on the
    classifier's session). ``now``: decided at once (a pool asked for, or paths whose number
    is known); else at the first result, when the first batch's paths have been read
    (`onnxedge.runtime.classifier.loader.files_run`)."""

    def __init__(self, start: Callable[[], tuple[DecodePool, str | None, Generator]], now: bool):
        self._start = start
        self._results: Generator[FileResult, None, None] | None = None
        self.pool: DecodePool | None = None
        self.batches: str | None = None
        if now:
            self._begun()

    def _begun(self) -> Generator[FileResult, None, None]:
        if self._results is None:
            self.pool, self.batches, self._results = self._start()
        return self._results

    def send(self, value: None) -> FileResult:
        return self._begun().send(value)

    def throw(self, *args: Any) -> FileResult:  # type: ignore[override]
        return self._begun().throw(*args)

    def close(self) -> None:
        if self._results is None:  # never started: nothing to stop, nothing more to give
            self._results = _no_results()
        self._results.close()

    def ran_on(self, provider: str) -> str:
        """``provider`` (the classifier's), and where batches ran several at once, the session
        they ran on: what `onnxedge predict`'s summary and `evaluate`'s result name."""
        return provider + (f"; {self.batches}" if self.batches else "")


def _no_results() -> Generator[FileResult, None, None]:
    yield from ()


class BatchWork:
    """What a batch process does with a batch of items: decodes each, then classifies the
    images in one call of the `PredictRows` it made with ``make_rows`` at its first batch (its
    own session of the model: a forked process never uses the one of the process that started
    it, whose threads it does not have). The results are `FileResult`s, in order, a bad file's
    error in its place. An `OnnxEdgeError` of the model's run comes back as one with the same
    message (its own class may not rebuild from a pickle)."""

    def __init__(self, decode: Callable[[Item], Decoded], make_rows: Callable[[], PredictRows]):
        self._decode = decode
        self._make_rows = make_rows
        self._rows: PredictRows | None = None

    def __call__(self, items: list[Item]) -> list[FileResult]:
        decoded = [self._decode(item) for item in items]
        try:
            if self._rows is None:
                self._rows = self._make_rows()
            return list(_run_pending(self._rows, decoded))
        except OnnxEdgeError as e:
            raise OnnxEdgeError(str(e)) from None


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    pending: list[Any] = []
    for item in items:
        pending.append(item)
        if len(pending) >= size:
            yield pending
            pending = []
    if pending:
        yield pending


def shared_tail(batches: Iterator[list[Any]], parts: int) -> Iterator[list[Any]]:
    """``batches`` as they come but the last two (the last one where there is only one): their
    items in ``parts`` (at least 1) batches of about the same size, none larger than a batch,
    so that the batch processes share the end of a run instead of one of them classifying the
    last full batch while the others, done, wait (`stream_files`, with twice as many parts as
    processes). What that wait costs grows with the files: on the 2-core Zen 3, 40 JPEGs of
    4000x3000 in batches of 32 on 2 batch processes (the default for them then; large files
    now take threads, `decode.large_files`) took 3.6-3.8 s as 4 batches of 10 against 5.3-5.6
    as 32 and 8 (`onnxedge predict`, ONNX Runtime int8, exact decode, 3 runs each); 3,000
    small files lose at most half a batch's time either way. Two batches of paths are held
    back."""
    held: list[list[Any]] = []
    for batch in batches:
        held.append(batch)
        if len(held) > 2:
            yield held.pop(0)
    rest = [item for batch in held for item in batch]
    # no larger than a batch (the first held is a whole one), no empty one
    step = min(len(held[0]), -(-len(rest) // min(parts, len(rest)))) if rest else 1
    for start in range(0, len(rest), step):
        yield rest[start : start + step]


def _pending_results(predict_rows: PredictRows, pending: list[Decoded]) -> list[FileResult]:
    return list(_run_pending(predict_rows, pending))


def concurrent_batches(pool: DecodePool, cpus: int, *, one_thread: bool) -> int:
    """How many batches `stream_files` runs at once, each on one engine thread: one per CPU
    (at most `MAX_CONCURRENT_BATCHES`) where files are decoded in decoder processes (not batch
    processes, which run their batches themselves) on 2 or more CPUs
    and the classifier has a ``one_thread`` session (ONNX Runtime's CPU EP or OpenVINO, their
    threads left to the default), else 1 (one batch at a time, on the session's own threads).
    With one batch on two threads, every parallel operator waits for the thread that a decoder
    process holds back; two batches on one thread each do not wait for each other
    (docs/RUNTIME.md, "Decoding in processes": ONNX Runtime fp32 +15%, int8 +13% files to
    labels on 2 CPUs; OpenVINO int8 on two streams +15-20%)."""
    if not pool.processes or pool.batches or cpus < 2 or not one_thread:
        return 1
    return min(cpus, MAX_CONCURRENT_BATCHES)


def files_batches(classifier: Any, pool: DecodePool, cpus: int) -> str | None:
    """What `Classifier.predict_files` with ``pool`` on ``cpus`` CPUs runs its batches on where
    it runs several at once (``2 batches at once on ...``); None where it runs one at a time on
    the classifier's session. OpenVINO's streams are compiled here if not yet."""
    one_thread = classifier.one_thread
    runs = concurrent_batches(pool, cpus, one_thread=one_thread is not None)
    return one_thread.describe(runs) if runs > 1 else None


# `concurrent_batches`' most: each batch in flight holds its decoded images and activations.
MAX_CONCURRENT_BATCHES = 8


def _as_item(path: str | Path | ImageReadError) -> Item:
    if isinstance(path, ImageReadError):
        return os.fsdecode(path.path), path.reason
    if not isinstance(path, (str, bytes, os.PathLike)):  # an error result; the others go on
        return repr(path)[:120], f"expected a file path, got {type(path).__name__}"
    return path


def _run_pending(
    predict_rows: PredictRows, pending: Sequence[tuple[str, np.ndarray | str]]
) -> Iterator[FileResult]:
    arrays = [a for _, a in pending if isinstance(a, np.ndarray)]
    rows = iter(predict_rows(np.stack(arrays)) if arrays else [])
    for name, item in pending:
        if not isinstance(item, np.ndarray):
            yield FileResult(file=name, error=item)
            continue
        result = next(rows)
        if isinstance(result, str):
            yield FileResult(file=name, error=result)
        else:
            yield FileResult(file=name, prediction=result)


def decode_window(batch_size: int, workers: int) -> int:
    """How many files `Classifier.predict_files` decodes ahead of the batch the model runs: the
    next batch, so that the model never waits for it (at least 2 per thread). With one thread
    nothing is decoded ahead. Memory: this many decoded images (uint8, 12 KB each at 64x64x3)
    besides the batch, and one full-size image per thread being decoded."""
    return 0 if workers <= 1 else max(batch_size, 2 * workers)


def process_window(batch_size: int, workers: int, image_bytes: int | None = None) -> int:
    """`decode_window` for decoder processes: the next `PROCESS_WINDOW_BATCHES` batches, as
    many of them as hold at most `WINDOW_BYTES` of images of ``image_bytes`` each (at least one;
    one where the size is not known), and at least two chunks per process, even with one
    process (it decodes while the model runs)."""
    batches = 1
    if image_bytes:
        batches = max(1, min(PROCESS_WINDOW_BATCHES, WINDOW_BYTES // (batch_size * image_bytes)))
    return max(batches * batch_size, 2 * workers * process_chunk(batch_size))


# How many batches decoder processes decode ahead of the model (`process_window`). A decoder
# that shares the CPUs with the model's threads runs ahead while they are busy and so is not
# behind when they are done: on the 2-core Zen 3, OpenVINO int8 on two streams from 3,000 JPEGs,
# 6 interleaved passes each, median 1,711 files/s against 1,621 with one batch ahead (and with
# no batch waiting beside the running ones, `stream_files`); 12 KB a 64x64 image, so 2.3 MB at
# batch 64 (docs/RUNTIME.md, "Decoding in processes").
PROCESS_WINDOW_BATCHES = 3
# The most memory `process_window`'s batches take where there are more than one: three batches
# of 64 images of 224x224 (147 KB each), one of 256.
WINDOW_BYTES = 64 * 2**20


def find_images(paths: Iterable[str]) -> Iterator[str | ImageReadError]:
    """The files to classify, lazily and in a stable order.

    1. A path that is a directory is walked: entries in name order, files of a directory before
       its subdirectories; hidden entries (``.name``) skipped; symlinked directories not followed.
    2. In a walk, a file is taken when its name ends in an image extension
       (`onnxedge.runtime.classifier.preprocess.IMAGE_EXTENSIONS`, any case); an entry named like
       an image
       that is a directory is yielded too, so that it is reported rather than silently entered.
    3. Any other path (a file, or nothing at all) is yielded as given, whatever its extension.
    4. A directory that cannot be listed is yielded as an `ImageReadError`.
    """
    for given in paths:
        if isinstance(given, (str, bytes, os.PathLike)) and os.path.isdir(given):
            yield from _walk(given)
        else:
            yield given


def _walk(top: str) -> Iterator[str | ImageReadError]:
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(top, onerror=errors.append):
        yield from _drain(errors)
        named_like_images = [d for d in dirnames if is_image_name(d) and not d.startswith(".")]
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d not in named_like_images
        )
        files = [f for f in filenames if is_image_name(f) and not f.startswith(".")]
        for name in sorted(files + named_like_images):
            yield os.path.join(dirpath, name)
    yield from _drain(errors)


def _drain(errors: list[OSError]) -> Iterator[ImageReadError]:
    while errors:
        e = errors.pop(0)
        yield ImageReadError(e.filename, f"cannot list the directory: {e.strerror or e}")
