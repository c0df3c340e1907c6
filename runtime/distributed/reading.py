"""One image to the model's input, inside a Ray worker, by the local run's code: a local path
through `onnxedge.runtime.classifier.preprocess.load_image` as `predict` reads it; a URI's or a
batch's bytes through the same function on an in-memory file. A file that cannot be used gives
its reason (a string) instead of an array, as `Classifier.predict_files` reports it."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxedge.runtime.classifier.preprocess import ImageReadError, load_image
from onnxedge.runtime.distributed.listing import filesystem, is_uri
from onnxedge.runtime.errors import first_line


def decode(item: Any, spec: Mapping[str, Any], max_pixels: int | None) -> np.ndarray | str:
    """float32 [C, H, W] for ``item`` (a local path, a URI pyarrow reads, or the bytes of an image
    file), or the one-line reason it cannot be used."""
    try:
        if isinstance(item, (bytes, bytearray, memoryview)):
            return _from_bytes(bytes(item), spec, max_pixels)
        if is_uri(item):
            return _from_bytes(_read_uri(item), spec, max_pixels)
        return load_image(os.fspath(item), spec, max_pixels=max_pixels)
    except ImageReadError as e:
        return e.reason


def _from_bytes(data: bytes, spec: Mapping[str, Any], max_pixels: int | None) -> np.ndarray:
    if not data:
        raise ImageReadError("", "expected an image file, found an empty file (0 bytes)")
    return load_image(io.BytesIO(data), spec, max_pixels=max_pixels)


def _read_uri(uri: str) -> bytes:
    """A file's bytes through pyarrow, refused as a local file would be (nothing there, a
    directory, an empty file) with the same reasons."""
    from pyarrow import fs

    filesystem_, path = filesystem(uri)
    try:
        info = filesystem_.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            raise ImageReadError(uri, "expected an image file, found nothing there")
        if info.type == fs.FileType.Directory:
            raise ImageReadError(uri, "expected an image file, found a directory")
        with filesystem_.open_input_stream(path) as f:
            return f.read()
    except OSError as e:
        raise ImageReadError(uri, f"cannot read: {first_line(e)}") from None


def refuse_decompression_bombs(max_pixels: int | None) -> None:
    """In this process (a Ray worker of our own): PIL's decompression-bomb warning is an error
    for the file, and a ``max_pixels`` above PIL's limit raises the limit, as `predict` does for
    the length of a local run."""
    from PIL import Image

    warnings.simplefilter("error", Image.DecompressionBombWarning)
    limit = Image.MAX_IMAGE_PIXELS
    if max_pixels is not None and limit is not None and max_pixels > limit:
        Image.MAX_IMAGE_PIXELS = max_pixels


__all__ = ["decode", "refuse_decompression_bombs"]
