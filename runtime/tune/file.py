"""The tuning file `onnxedge tune` writes and ``--tuned`` reads: JSON, written atomically.

::

    {"format": "onnxedge-tuning", "format_version": 1,
     "bundle": {"path": ..., "manifest_sha256": ...},
     "machine": {"cpu": ..., "cpu_flags_sha256": ..., "usable_cores": ..., "onnxruntime": ...,
                 "openvino": ..., "isa": [...]},
     "winners": {"1": {"variant", "engine", "precision", "threads", "throughput"}, "64": {...}},
     "rows": [...every setup at every batch size...], "excluded": [...], ...,
     "files": {"batch_size": 64, "decode": "fast", "winner": {"variant", "engine", "precision",
               "pool", "workers", "decode", "throughput"}, "rows": [...], ...}}

``files`` is there only where `tune --images` timed files to labels (`onnxedge.runtime.tune.files`).

Its default place is beside the bundle directory, ``<BUNDLE>.tuning.json``: a bundle's verified
contents never change (a changed one has another manifest hash), so the file is kept outside it.
`read_tuning` checks the format and the winners; whether the file holds for a bundle and a
machine is `onnxedge.runtime.tune.choice`'s business.
"""

from __future__ import annotations

import dataclasses
import json
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle.hashing import sha256_file
from onnxedge.runtime.bundle.reader import MANIFEST, Bundle
from onnxedge.runtime.bundle.write import atomic_write_bytes
from onnxedge.runtime.errors import OnnxEdgeError, first_line, found_at
from onnxedge.runtime.jsonlimits import MAX_BYTES, check_limits
from onnxedge.runtime.tune.setup import FilesSetup, TunedSetup

TUNING_FORMAT = "onnxedge-tuning"
TUNING_FORMAT_VERSION = 1
SUFFIX = ".tuning.json"


@dataclasses.dataclass(frozen=True)
class TuningFile:
    """A tuning file as read: the bundle and machine it was measured for, and the winners."""

    path: Path
    manifest_sha256: str
    machine: Mapping[str, Any]
    winners: Mapping[int, TunedSetup]
    date: str = ""
    files: FilesSetup | None = None  # the fastest from files, where `tune --images` ran
    files_batch: int | None = None  # the batch size it was measured at


def default_tuning_path(bundle: str | Path) -> Path:
    """``<BUNDLE>.tuning.json`` beside the bundle directory."""
    path = Path(bundle).resolve()
    return path.with_name(path.name + SUFFIX)


def write_tuning(data: Mapping[str, Any], path: str | Path) -> Path:
    """Write a `TuneResult.to_dict` atomically (a temporary file renamed into place)."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
    return path


def read_tuning(path: str | Path) -> TuningFile:
    """The tuning file at ``path``; `OnnxEdgeError` saying what is wrong with it otherwise."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):  # a pipe would block the read, a device never end it
            raise OnnxEdgeError(f"expected a tuning file, found {found_at(path)}")
        with open(path, "rb") as file:
            raw = file.read(MAX_BYTES + 1)  # however large it says it is, or has become
        if len(raw) > MAX_BYTES:
            raise OnnxEdgeError(
                f"{path}: expected a tuning file of at most {MAX_BYTES:,} bytes, found more"
            )
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise OnnxEdgeError(f"no tuning file at {path} (make one with onnxedge tune)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OnnxEdgeError(f"cannot read {path}: {e}") from None
    check_limits(text, path, error=OnnxEdgeError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise OnnxEdgeError(f"{path} is not JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, RecursionError) as e:  # an integer of more digits than Python reads
        raise OnnxEdgeError(f"{path} is not JSON a reader takes ({first_line(e)})") from None
    if not isinstance(data, dict) or data.get("format") != TUNING_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise OnnxEdgeError(f"{path}: expected format {TUNING_FORMAT!r}, found {found!r}")
    version = data.get("format_version")
    if type(version) is not int or version != TUNING_FORMAT_VERSION:  # not true, not 1.0
        raise OnnxEdgeError(
            f"{path}: expected format_version {TUNING_FORMAT_VERSION}, found "
            f"{data.get('format_version')!r}"
        )
    bundle, machine, winners = data.get("bundle"), data.get("machine"), data.get("winners")
    sha = bundle.get("manifest_sha256") if isinstance(bundle, dict) else None
    if not isinstance(sha, str) or not isinstance(machine, dict) or not isinstance(winners, dict):
        raise OnnxEdgeError(
            f"{path}: expected 'bundle' with 'manifest_sha256', 'machine' and 'winners'"
        )
    parsed = {}
    for key, block in winners.items():
        try:
            batch = int(key) if key.isascii() and key.isdigit() else 0  # not " 32 ", "3_2"
            if batch < 1:
                raise ValueError
            parsed[batch] = TunedSetup.from_dict(block)
        except ValueError:
            raise OnnxEdgeError(
                f"{path}: winners: expected batch sizes >= 1, found {key!r}"
            ) from None
        except OnnxEdgeError as e:
            raise OnnxEdgeError(f"{path}: winners[{key!r}]: {e}") from None
    if not parsed:
        raise OnnxEdgeError(f"{path}: no winner at any batch size (every setup failed)")
    files, files_batch = _files_winner(path, data.get("files"))
    return TuningFile(path, sha, machine, parsed, str(data.get("date", "")), files, files_batch)


def _files_winner(path: Path, block: Any) -> tuple[FilesSetup | None, int | None]:
    """The files stage's winner and its batch size; (None, None) where there was no files stage
    or nothing in it could be measured."""
    if block is None:
        return None, None
    if not isinstance(block, dict):
        raise OnnxEdgeError(f"{path}: files: expected an object, found {type(block).__name__}")
    winner, batch = block.get("winner"), block.get("batch_size")
    if winner is None:
        return None, None
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise OnnxEdgeError(f"{path}: files: expected batch_size >= 1, found {batch!r}")
    try:
        return FilesSetup.from_dict(winner), batch
    except OnnxEdgeError as e:
        raise OnnxEdgeError(f"{path}: files: winner: {e}") from None


def manifest_sha256(bundle: Bundle) -> str:
    """The sha256 of the bundle's manifest.json: it lists every file's sha256, so it names the
    bundle's verified contents."""
    return sha256_file(bundle.path / MANIFEST)


__all__ = [
    "SUFFIX",
    "TUNING_FORMAT",
    "TUNING_FORMAT_VERSION",
    "TuningFile",
    "default_tuning_path",
    "manifest_sha256",
    "read_tuning",
    "write_tuning",
]
