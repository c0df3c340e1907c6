"""`predict`: `onnxedge predict` as a function: a bundle's classifier over image files and
folders, one `FileResult` per file, streamed."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from onnxedge.runtime.classifier.args import check_several
from onnxedge.runtime.classifier.classifier import DEFAULT_BATCH_SIZE, Classifier
from onnxedge.runtime.classifier.files import FilesRun, find_images
from onnxedge.runtime.classifier.predictions import FileResult
from onnxedge.runtime.classifier.preprocess import MAX_PIXELS
from onnxedge.runtime.engines import DEFAULT_PRECISION
from onnxedge.runtime.engines.base import ONNXRUNTIME


@dataclasses.dataclass(frozen=True)
class FilePredictions:
    """What `predict` returns: the classifier that runs (its provider, output kind, labels) and
    its results, one `FileResult` per file in order, computed as they are iterated (with what
    ran them once known: `FilesRun`'s ``pool`` and ``batches``); closing ``results`` (or an
    exception while iterating) stops the decoding."""

    classifier: Classifier
    results: FilesRun

    def __iter__(self) -> Iterator[FileResult]:
        return self.results


def predict(
    bundle: str | Path,
    paths: Iterable[str | Path],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threshold: float | None = None,
    provider: str = "auto",
    threads: int | None = None,
    decode_threads: int | None = None,
    decode_processes: int | None = None,
    batch_processes: int | None = None,
    engine: str = ONNXRUNTIME,
    precision: str = DEFAULT_PRECISION,
    variant: str | None = None,
    max_pixels: int | None = MAX_PIXELS,
    tuned: bool | str | Path | None = None,
    decode: str | None = None,
) -> FilePredictions:
    """Classify the image files ``paths`` with BUNDLE's model, as `onnxedge predict` does.

    A path that is a folder is walked for image files (`find_images`); every other path is
    classified as given. A file that cannot be used is a `FileResult` with its ``error``, and the
    others go on. The classifier is opened (and the bundle verified) at the call; the files are
    read as the results are iterated. ``provider``, ``threads``, ``engine``, ``precision``,
    ``variant``, ``tuned`` and ``decode`` are `Classifier.from_bundle`'s; the rest
    `Classifier.predict_files`'.
    """
    paths = check_several(paths, "paths")  # before the model is loaded
    classifier = Classifier.from_bundle(
        bundle,
        provider=provider,
        threads=threads,
        engine=engine,
        precision=precision,
        variant=variant,
        tuned=tuned,
        batch_size=batch_size,  # the tuned choice for this batch size
        decode=decode,
        for_files=True,  # a tuning file's files winner, where it has one
    )
    results = classifier.predict_files(
        find_images(_path_text(p) for p in paths),
        batch_size=batch_size,
        threshold=threshold,
        max_pixels=max_pixels,
        decode_threads=decode_threads,
        decode_processes=decode_processes,
        batch_processes=batch_processes,
    )
    return FilePredictions(classifier=classifier, results=results)


def _path_text(item: Any) -> Any:
    """A path as text (a pyarrow scalar's value, bytes decoded as the file system does); any
    other item as it is, for `predict_files` to report."""
    item = item.as_py() if hasattr(item, "as_py") else item
    return str(os.fsdecode(item)) if isinstance(item, (str, bytes, os.PathLike)) else item
