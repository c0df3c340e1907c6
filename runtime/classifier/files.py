"""The file pipeline of `onnxedge.runtime.classifier.classifier.Classifier.predict_files`: files
decoded by a pool of threads a window ahead of the batch the model runs, a bad file a failed
`FileResult` while the others go on.

It knows the classifier only by what it is given: a function from a path to the model's input
(`Load`) and one from a stacked batch to a prediction (or an error message) per row
(`PredictRows`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from onnxedge.runtime.classifier.decode import ordered_map
from onnxedge.runtime.classifier.predictions import FileResult, Prediction
from onnxedge.runtime.classifier.preprocess import ImageReadError

# A path -> the image as the model's input (or its pixels), raising ImageReadError.
Load = Callable[[str | Path], np.ndarray]
# A stacked batch -> per row, its prediction or why it has none.
PredictRows = Callable[[np.ndarray], Sequence[Prediction | str]]


def stream_files(
    load: Load,
    predict_rows: PredictRows,
    paths: Iterable[str | Path | ImageReadError],
    batch_size: int,
    workers: int,
) -> Generator[FileResult, None, None]:
    """1. to 3. of `Classifier.predict_files`, its arguments already checked."""

    def decode(path: str | Path | ImageReadError) -> tuple[str, np.ndarray | str]:
        if isinstance(path, ImageReadError):
            return os.fspath(path.path), path.reason
        try:
            image = load(path)
        except ImageReadError as e:
            return os.fspath(path), e.reason
        return os.fspath(path), image

    decoded = ordered_map(decode, paths, workers=workers, ahead=decode_window(batch_size, workers))
    pending: list[tuple[str, np.ndarray | str]] = []
    with contextlib.closing(decoded):  # 3.: the pool stops with this generator
        for _, item in decoded:
            pending.append(item)
            if len(pending) >= batch_size:
                yield from _run_pending(predict_rows, pending)
                pending = []
    if pending:
        yield from _run_pending(predict_rows, pending)


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
