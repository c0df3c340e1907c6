"""Plain npz files for reference data: written byte for byte reproducibly, read without pickles."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.errors import BundleError, first_line


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed npz of ``arrays`` in their order: no pickled objects, fixed timestamps, so
    identical contents give identical bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an npz file (pickled objects refused); an unreadable file is a
    `BundleError` naming it."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BundleError(
            f"cannot read {path}: expected a numpy .npz archive, found: {first_line(e)}"
        ) from None


def read_meta(
    path: Path, arrays: Mapping[str, np.ndarray], *, fmt: str, version: int, what: str
) -> dict[str, Any]:
    """The JSON ``meta`` entry of a reference file, checked to be of format ``fmt`` at
    ``version`` and to list its batch sizes; a `BundleError` saying what was found otherwise."""
    if "meta" not in arrays:
        raise BundleError(f"{path} is not {what}: expected a 'meta' entry, found none")
    try:
        meta = json.loads(arrays["meta"].astype(np.uint8).tobytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: its 'meta' entry is not JSON: {first_line(e)}") from None
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    if found != fmt or meta.get("format_version") != version:
        raise BundleError(
            f"{path}: expected {what} of format {fmt!r} version {version}, found {found!r} "
            f"version {meta.get('format_version') if isinstance(meta, dict) else None!r}"
        )
    sizes = meta.get("batch_sizes")
    if not (
        isinstance(sizes, list)
        and sizes
        and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in sizes)
    ):
        raise BundleError(f"{path}: expected a list of batch sizes in its meta, found {sizes!r}")
    return meta
