"""The file pipeline of `onnxedge.runtime.classifier.classifier.Classifier.predict_files`: files
decoded by a
pool of threads a window ahead of the batch the model runs, a bad file a failed `FileResult` while
the others go on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onnxedge.runtime.classifier.decode import ordered_map
from onnxedge.runtime.classifier.predictions import FileResult
from onnxedge.runtime.classifier.preprocess import ImageReadError, load_image, load_pixels, pads

if TYPE_CHECKING:
    from onnxedge.runtime.classifier.classifier import Classifier


def stream_files(
    classifier: Classifier,
    paths: Iterable[str | Path | ImageReadError],
    batch_size: int,
    threshold: float | None,
    max_pixels: int | None,
    workers: int,
) -> Generator[FileResult, None, None]:
    """1. to 3. of `Classifier.predict_files`, its arguments already checked."""

    # uint8 pixels, scaled a batch at a time (`Classifier.model_input`), or by the model itself;
    # a resize mode that pads gives each image its own size: the model's input, per image.
    padded = pads(classifier.preprocessing)

    def decode(path: str | Path | ImageReadError) -> tuple[str, np.ndarray | str]:
        if isinstance(path, ImageReadError):
            return os.fspath(path.path), path.reason
        try:
            load = load_image if padded else load_pixels
            image = load(
                path, classifier.preprocessing, max_pixels=max_pixels, decode=classifier.decode
            )
        except ImageReadError as e:
            return os.fspath(path), e.reason
        return os.fspath(path), image

    decoded = ordered_map(decode, paths, workers=workers, ahead=decode_window(batch_size, workers))
    pending: list[tuple[str, np.ndarray | str]] = []
    with contextlib.closing(decoded):  # 3.: the pool stops with this generator
        for _, item in decoded:
            pending.append(item)
            if len(pending) >= batch_size:
                yield from _run_pending(classifier, pending, threshold)
                pending = []
    if pending:
        yield from _run_pending(classifier, pending, threshold)


def _run_pending(
    classifier: Classifier,
    pending: Sequence[tuple[str, np.ndarray | str]],
    threshold: float | None,
) -> Iterator[FileResult]:
    arrays = [a for _, a in pending if isinstance(a, np.ndarray)]
    rows = iter(
        classifier._prediction_rows(
            classifier._outputs(classifier.model_input(np.stack(arrays)), len(arrays)), threshold
        )
        if arrays
        else []
    )
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
