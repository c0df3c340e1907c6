"""The real images of the golden data (`onnxedge export --images`, `onnxedge import --images`):
found as `onnxedge predict` walks a directory and preprocessed by the runtime's `load_image`.
Torch-free, so that `onnxedge import` does not load torch."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.classifier.preprocess import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    is_image_name,
    load_image,
)
from onnxedge.runtime.errors import OnnxEdgeError

__all__ = ["find_image_files", "read_images"]

log = logging.getLogger(__name__)


def find_image_files(directory: Path) -> Iterator[Path]:
    """The image files under ``directory``, lazily, in the order `onnxedge predict` walks a
    directory: names sorted, a directory's files before its subdirectories, hidden entries
    (``.name``) skipped, a file taken when `is_image_name` says so, symlinked directories not
    followed."""
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if is_image_name(f) and not f.startswith(".")):
            yield Path(dirpath, name)


def read_images(
    directory: str | Path, preprocessing: Mapping[str, Any], *, limit: int | None = None
) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """The image files under ``directory`` (walked as `find_image_files` says), preprocessed with
    the runtime's `load_image`, the path `onnxedge predict` takes, until ``limit`` were read (None:
    all). Each image is named by its path relative to ``directory``. A file that is not a usable
    image is skipped with a warning; returns (images, "name: reason" for each skipped file)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise OnnxEdgeError(
            f"--images: expected a directory of images, found no directory at {directory}"
        )
    images: list[tuple[str, np.ndarray]] = []
    skipped: list[str] = []
    candidates = find_image_files(directory)
    for path in candidates:
        if limit is not None and len(images) >= limit:
            more = 1 + sum(1 for _ in candidates)
            log.warning(
                "--images: the golden data has room for %d images; using the first %d, leaving "
                "%d more unread (in name order)",
                limit,
                limit,
                more,
            )
            break
        name = path.relative_to(directory).as_posix()
        try:
            images.append((name, load_image(path, preprocessing)))
        except ImageReadError as e:
            log.warning("--images: skipped %s: %s", name, e.reason)
            skipped.append(f"{name}: {e.reason}")
    if not images:
        raise OnnxEdgeError(
            f"--images: expected image files ({', '.join(IMAGE_EXTENSIONS)}) in {directory}, "
            f"found none readable ({len(skipped)} skipped)"
        )
    return images, skipped
