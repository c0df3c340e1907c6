"""A data set's images as model inputs, preprocessed as the bundle's manifest says: the calibration
sample of the train split and the test split in chunks, decoded in a thread pool
(`onnxedge.runtime.classifier.decode`).

An image that cannot be read is an error here, not a skipped file: a calibration or a gate over
a silently smaller set would not be the one the manifest records. The message names how many
failed and the first of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.classifier.decode import default_decode_workers, ordered_map
from onnxedge.runtime.classifier.preprocess import (
    EXACT,
    ImageReadError,
    finish,
    load_image,
    load_pixels,
    normalize,
    pads,
)
from onnxedge.runtime.data import Split
from onnxedge.runtime.errors import OnnxEdgeError


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Preprocessed images [n, C, H, W] and their class indices; ``pixels``: the same images'
    uint8 pixels [n, H, W, C] before the scaling (what a variant that takes pixels is given), None
    for a resize mode that pads."""

    inputs: np.ndarray
    labels: np.ndarray
    pixels: np.ndarray | None = None


def calibration_sample(split: Split, size: int, seed: int) -> tuple[Path, ...]:
    """``size`` paths of ``split`` drawn without replacement from ``seed`` (all of them when the
    split is smaller), in the split's order, so that one seed gives one sample."""
    if size < 1:
        raise OnnxEdgeError(f"--calibration-size: expected at least 1, got {size}")
    if len(split) == 0:
        raise OnnxEdgeError(f"the {split.name} split is empty: nothing to calibrate on")
    if size >= len(split):
        return split.paths
    chosen = np.random.default_rng(seed).choice(len(split), size=size, replace=False)
    return tuple(split.paths[i] for i in sorted(chosen))


def load_inputs(
    paths: Sequence[Path],
    preprocessing: Mapping[str, Any],
    *,
    what: str,
    workers: int | None = None,
) -> np.ndarray:
    """Every path preprocessed, stacked [N, C, H, W] float32; unreadable images are an error."""
    arrays, failed = [], []
    for _, item in _decoded(paths, preprocessing, workers):
        if isinstance(item, ImageReadError):
            failed.append(item)
        else:
            arrays.append(item)
    _refuse(failed, len(paths), what)
    return np.stack(arrays)


def iter_chunks(
    split: Split,
    preprocessing: Mapping[str, Any],
    *,
    chunk: int = 256,
    what: str,
    workers: int | None = None,
    decode: str = EXACT,
) -> Iterator[Chunk]:
    """``split`` preprocessed ``chunk`` images at a time, in order, with their labels, its files
    decoded as ``decode`` says (`load_pixels`); the next chunk is decoded while the caller works
    on this one. Unreadable images are an error, raised after the whole split has been read so
    that it names how many there are."""
    failed: list[ImageReadError] = []
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    items = list(zip(split.paths, split.labels, strict=True))

    def load(pair: tuple[Path, int]) -> np.ndarray | ImageReadError:
        try:
            return load_pixels(pair[0], preprocessing, decode=decode)
        except ImageReadError as e:
            return e

    for (_, label), item in ordered_map(
        load, items, workers=workers or default_decode_workers(), ahead=chunk
    ):
        if isinstance(item, ImageReadError):
            failed.append(item)
            continue
        arrays.append(item)
        labels.append(label)
        if len(arrays) >= chunk and not failed:
            yield _chunk(arrays, labels, preprocessing)
            arrays, labels = [], []
    _refuse(failed, len(items), what)
    if arrays:
        yield _chunk(arrays, labels, preprocessing)


def _chunk(pixels: list[np.ndarray], labels: list[int], preprocessing: Mapping[str, Any]) -> Chunk:
    if pads(preprocessing):  # each image its own size until the padding
        return Chunk(np.stack([finish(p, preprocessing) for p in pixels]), np.asarray(labels))
    stacked = np.stack(pixels)
    return Chunk(normalize(stacked, preprocessing), np.asarray(labels), stacked)


def _decoded(
    paths: Sequence[Path], preprocessing: Mapping[str, Any], workers: int | None
) -> Iterator[tuple[Path, np.ndarray | ImageReadError]]:
    return ordered_map(
        lambda p: _load(p, preprocessing),
        paths,
        workers=workers or default_decode_workers(),
        ahead=64,
    )


def _load(path: Path, preprocessing: Mapping[str, Any]) -> np.ndarray | ImageReadError:
    try:
        return load_image(path, preprocessing)
    except ImageReadError as e:
        return e


def _refuse(failed: Sequence[ImageReadError], total: int, what: str) -> None:
    if failed:
        first = failed[0]
        raise OnnxEdgeError(
            f"{what}: {len(failed)} of {total} images cannot be read (first: {first.path}: "
            f"{first.reason}); expected every image readable: fix or remove them"
        )


__all__ = ["Chunk", "calibration_sample", "iter_chunks", "load_inputs"]
