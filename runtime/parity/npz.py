"""Plain npz files for reference data: written byte for byte reproducibly and deflated, read
without pickles; inputs made from 8-bit images stored as their levels (`level_arrays`)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.errors import BundleError, first_line
from onnxedge.runtime.jsonlimits import load_json

# A channel holding at most this many distinct values is stored as one byte per value.
MAX_LEVELS = 256


def npz_bytes(arrays: Mapping[str, np.ndarray], *, compress: bool = True) -> bytes:
    """An npz of ``arrays`` in their order, deflated (``compress``) or stored: no pickled objects,
    fixed timestamps, so identical contents give identical bytes. `np.load` reads either."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method, compresslevel=6) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def level_arrays(name: str, array: np.ndarray) -> dict[str, np.ndarray]:
    """A float32 array [N, C, ...] stored exactly: where every channel holds at most `MAX_LEVELS`
    distinct values (inputs made from 8-bit images: each pixel level of a channel normalises to
    one float), ``NAME_codes`` (uint8, the array's shape) and ``NAME_levels`` (float32 [C, K]:
    channel c's value for code k), which `from_levels` turns back into the same bits; otherwise
    the array itself as ``NAME``. Values are told apart by their bits (0.0 from -0.0)."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim < 2 or array.size == 0:
        return {name: array}
    bits = array.view(np.uint32)
    channels = [np.unique(bits[:, c], return_inverse=True) for c in range(array.shape[1])]
    width = max(len(values) for values, _ in channels)
    if width > MAX_LEVELS:
        return {name: array}
    codes = np.empty(array.shape, dtype=np.uint8)
    levels = np.zeros((array.shape[1], width), dtype=np.uint32)
    for c, (values, inverse) in enumerate(channels):
        codes[:, c] = inverse.reshape(codes[:, c].shape)
        levels[c, : len(values)] = values
    return {f"{name}_codes": codes, f"{name}_levels": levels.view(np.float32)}


def from_levels(path: Path, arrays: Mapping[str, np.ndarray], name: str) -> np.ndarray | None:
    """The array `level_arrays` stored under ``name`` (None where neither form is there); a
    `BundleError` naming the file where the codes and levels do not fit together."""
    if name in arrays:
        return arrays[name]
    codes, levels = arrays.get(f"{name}_codes"), arrays.get(f"{name}_levels")
    if codes is None and levels is None:
        return None
    if (
        codes is None
        or levels is None
        or codes.dtype != np.uint8
        or codes.ndim < 2
        or levels.dtype != np.float32
        or levels.shape[:1] != codes.shape[1:2]
        or levels.ndim != 2
        or (codes.size and int(codes.max()) >= levels.shape[1])
    ):
        raise BundleError(
            f"{path}: expected {name}_codes (uint8 [N, C, ...]) and {name}_levels (float32 "
            f"[C, K], K above every code), found "
            + ", ".join(
                f"{key} {a.dtype.name} {list(a.shape)}" if a is not None else f"no {key}"
                for key, a in ((f"{name}_codes", codes), (f"{name}_levels", levels))
            )
        )
    table = levels.view(np.uint32)
    out = np.empty(codes.shape, dtype=np.uint32)
    for c in range(codes.shape[1]):
        out[:, c] = table[c][codes[:, c]]
    return out.view(np.float32)


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
    path: Path,
    arrays: Mapping[str, np.ndarray],
    *,
    fmt: str,
    versions: Collection[int],
    what: str,
) -> dict[str, Any]:
    """The JSON ``meta`` entry of a reference file, checked to be of format ``fmt`` at one of
    ``versions`` and to list its batch sizes; a `BundleError` saying what was found otherwise."""
    if "meta" not in arrays:
        raise BundleError(f"{path} is not {what}: expected a 'meta' entry, found none")
    meta = load_json(arrays["meta"].astype(np.uint8).tobytes(), f"{path}: its 'meta' entry")
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if found != fmt or version not in versions or isinstance(version, bool):
        readable = " or ".join(map(str, sorted(versions)))
        newer = (
            " (written by a newer onnxedge; upgrade onnxedge to read it)"
            if found == fmt and isinstance(version, int) and version > max(versions)
            else ""
        )
        raise BundleError(
            f"{path}: expected {what} of format {fmt!r} version {readable}, found {found!r} "
            f"version {version!r}{newer}"
        )
    sizes = meta.get("batch_sizes")
    if not (
        isinstance(sizes, list)
        and sizes
        and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in sizes)
    ):
        raise BundleError(f"{path}: expected a list of batch sizes in its meta, found {sizes!r}")
    return meta
