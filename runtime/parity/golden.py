"""``golden.npz``: the reference `onnxedge export` stores in a bundle, written byte for byte
reproducibly (`golden_npz_bytes`) and read back with every array checked (`load_golden`).

Format version 2 (deflated) stores each distinct input row once: ``inputs`` holds the rows of
every batch, the largest batch's first (as 8-bit levels where they are made of 8-bit images:
`onnxedge.runtime.parity.npz.level_arrays`), and ``rows_bN`` which of them batch N is. Version 1
(uncompressed, ``inputs_bN`` per batch) is still read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.errors import BundleError
from onnxedge.runtime.parity.npz import from_levels, level_arrays, npz_bytes, read_meta, read_npz
from onnxedge.runtime.parity.reference import GOLDEN_SEED, Reference, ReferenceBatch, canonical_json

GOLDEN = "golden.npz"
GOLDEN_FORMAT = "onnxedge-golden"
GOLDEN_VERSION = 2
GOLDEN_READABLE_VERSIONS = (1, 2)


class NoGoldenData(BundleError):
    """The bundle was packed without its golden data (`onnxedge pack --no-golden`); the message
    says where it is: the full bundle."""


def _key(batch: int, what: str) -> str:
    return f"{what}_b{batch}"


def golden_npz_bytes(reference: Reference, meta: Mapping[str, Any]) -> bytes:
    """``golden.npz`` (format version 2) for a reference: a deflated npz, no pickled objects,
    byte-identical for identical contents (fixed timestamps, fixed order); each distinct input
    row stored once."""
    meta = {**meta, "format": GOLDEN_FORMAT, "format_version": GOLDEN_VERSION}
    pool: dict[bytes, int] = {}
    rows: dict[int, np.ndarray] = {}
    for size in sorted(reference.batch_sizes, reverse=True):  # the largest batch's rows first
        inputs = np.ascontiguousarray(reference.batches[size].inputs, dtype=np.float32)
        rows[size] = np.asarray([pool.setdefault(r.tobytes(), len(pool)) for r in inputs])
    shape = reference.batches[reference.batch_sizes[0]].inputs.shape[1:]
    unique = [np.frombuffer(row, dtype=np.float32).reshape(shape) for row in pool]
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(canonical_json(meta), dtype=np.uint8),
        **level_arrays("inputs", np.stack(unique)),
    }
    for size in reference.batch_sizes:
        b = reference.batches[size]
        arrays[_key(size, "rows")] = rows[size].astype(np.int32)
        arrays[_key(size, "kinds")] = np.asarray(b.kinds, dtype=np.str_)
        arrays[_key(size, "prob") + "_f64"] = np.asarray(b.prob, dtype=np.float64)
        arrays[_key(size, "logits") + "_f64"] = np.asarray(b.logits, dtype=np.float64)
        arrays[_key(size, "prob") + "_f32"] = np.asarray(b.prob_f32, dtype=np.float32)
        arrays[_key(size, "logits") + "_f32"] = np.asarray(b.logits_f32, dtype=np.float32)
    return npz_bytes(arrays)


def load_golden(bundle: Bundle) -> Reference:
    """The golden reference of a bundle; its file's sha256 is checked against the manifest.

    A bundle without golden data, a missing, altered or unreadable file, or one that lacks what
    the manifest says it holds is a `BundleError` naming the file and what was wrong.
    """
    block = bundle.manifest.get("golden")
    if not isinstance(block, Mapping) or "file" not in block:
        raise BundleError(
            f"{bundle.path} has no golden data: its manifest has no 'golden' block (exported by "
            "an older onnxedge?); re-export it, or use --reference live where torch is installed"
        )
    if not block["file"]:
        why = block.get("reason") or "its manifest names no golden file"
        raise NoGoldenData(f"{bundle.path} has no golden data: {why}")
    name = str(block["file"])
    path = bundle.file(name)  # verifies the sha256 against the manifest's file list
    arrays = read_npz(path)
    meta = _golden_meta(path, arrays)
    input_shape = _golden_input_shape(bundle, meta)
    classes = bundle.output.shape[-1] if bundle.output.shape else None
    if not isinstance(classes, int):
        raise BundleError(
            f"{bundle.path}/manifest.json: expected the output shape as [batch, K] with a fixed "
            f"K, found {list(bundle.output.shape)!r}"
        )
    pool = _input_rows(path, arrays, meta, input_shape)
    batches = {}
    for size in meta["batch_sizes"]:
        batches[int(size)] = _golden_batch(path, arrays, int(size), input_shape, classes, pool)
    if list(block.get("batch_sizes", meta["batch_sizes"])) != list(meta["batch_sizes"]):
        raise BundleError(
            f"{path} holds batch sizes {meta['batch_sizes']}, the manifest says "
            f"{block.get('batch_sizes')}"
        )
    logits_name = block.get("logits", meta.get("logits"))
    return Reference(
        source="golden",
        description=f"{name} (sha256 {bundle.manifest['files'][name]['sha256'][:12]}…, "
        f"{meta.get('reference', 'PyTorch')})",
        preprocessing=meta["preprocessing"],
        batches=batches,
        logits_name=str(logits_name) if logits_name else None,
        seed=int(meta.get("seed", GOLDEN_SEED)),
        precision=_precision(path, meta),
        float32_spread=_spread(path, meta),
    )


def _spread(path: Path, meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The float32 spread the export measured (golden data made before it: None)."""
    spread = meta.get("float32_spread")
    if spread is None:
        return None
    values = [spread.get(k) for k in ("prob", "logits")] if isinstance(spread, dict) else []
    if len(values) != 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values
    ):
        raise BundleError(
            f"{path}: expected float32_spread as {{'prob': x, 'logits': y}} with numbers >= 0, "
            f"found {spread!r}"
        )
    return dict(spread)


def _precision(path: Path, meta: Mapping[str, Any]) -> str:
    """What the reference was computed in (older golden data: float64, PyTorch's copy)."""
    precision = meta.get("reference_precision", "float64")
    if precision not in ("float64", "float32"):
        raise BundleError(
            f"{path}: expected reference_precision float64 or float32, found {precision!r}"
        )
    return str(precision)


def _golden_input_shape(bundle: Bundle, meta: Mapping[str, Any]) -> list[int]:
    """C, H, W of the golden inputs: the manifest's input shape, whose H and W, where they are
    dynamic (``--dynamic-spatial``), are the size the preprocessing resizes to."""
    stated = bundle.input.shape
    resize = meta["preprocessing"].get("resize")
    if len(stated) == 4 and isinstance(resize, list) and len(resize) == 2:
        stated = (
            stated[0],
            stated[1],
            *(d if isinstance(d, int) else r for d, r in zip(stated[2:], resize, strict=True)),
        )
    if len(stated) < 2 or not all(isinstance(d, int) for d in stated[1:]):
        raise BundleError(
            f"{bundle.path}/manifest.json: expected the input shape as [batch, C, H, W] with "
            f"fixed C, H, W, found {list(stated)!r}"
        )
    return [int(d) for d in stated[1:]]


def _golden_meta(path: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    meta = read_meta(
        path, arrays, fmt=GOLDEN_FORMAT, versions=GOLDEN_READABLE_VERSIONS, what="golden data"
    )
    if not isinstance(meta.get("preprocessing"), dict):
        raise BundleError(f"{path}: expected the preprocessing in its meta, found none")
    return meta


def _input_rows(
    path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], input_shape: list[int]
) -> np.ndarray | None:
    """Version 2: every distinct input row, float32 [R, C, H, W]; version 1 has none."""
    if meta["format_version"] < 2:
        return None
    pool = from_levels(path, arrays, "inputs")
    if pool is None:
        raise BundleError(f"{path} lacks its input rows ('inputs' or 'inputs_codes')")
    if pool.dtype != np.float32 or list(pool.shape[1:]) != input_shape or not len(pool):
        raise BundleError(
            f"{path}: its input rows should be float32 [R, {', '.join(map(str, input_shape))}], "
            f"found {pool.dtype.name} {list(pool.shape)}"
        )
    return pool


def _golden_batch(
    path: Path,
    arrays: Mapping[str, np.ndarray],
    size: int,
    input_shape: list[int],
    classes: int,
    pool: np.ndarray | None,
) -> ReferenceBatch:
    def get(key: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        if key not in arrays:
            raise BundleError(f"{path} lacks {key!r} (batch {size} is listed in its meta)")
        array = arrays[key]
        if array.dtype != dtype or tuple(array.shape) != shape:
            raise BundleError(
                f"{path}: {key!r} should be {np.dtype(dtype).name} {list(shape)}, found "
                f"{array.dtype.name} {list(array.shape)}"
            )
        return array

    shape_in = (size, *input_shape)
    if pool is None:  # version 1
        inputs = get(_key(size, "inputs"), np.float32, tuple(shape_in))
    else:
        rows = arrays.get(_key(size, "rows"))
        if rows is None or rows.dtype.kind not in "iu" or rows.shape != (size,):
            raise BundleError(f"{path} lacks {_key(size, 'rows')!r} with {size} row numbers")
        if rows.size and not (int(rows.min()) >= 0 and int(rows.max()) < len(pool)):
            raise BundleError(
                f"{path}: {_key(size, 'rows')!r} should number rows 0 to {len(pool) - 1}, found "
                f"{int(rows.min())} to {int(rows.max())}"
            )
        inputs = pool[rows]
    kinds_key = _key(size, "kinds")
    if kinds_key not in arrays or arrays[kinds_key].shape != (size,):
        raise BundleError(f"{path} lacks {kinds_key!r} with {size} entries")
    return ReferenceBatch(
        inputs=inputs,
        kinds=tuple(str(k) for k in arrays[kinds_key]),
        prob=get(_key(size, "prob") + "_f64", np.float64, (size, classes)),
        logits=get(_key(size, "logits") + "_f64", np.float64, (size, classes)),
        prob_f32=get(_key(size, "prob") + "_f32", np.float32, (size, classes)),
        logits_f32=get(_key(size, "logits") + "_f32", np.float32, (size, classes)),
    )
