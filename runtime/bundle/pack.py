"""`pack_bundle`: a copy of a bundle with only what a device needs, its hashes verified.

1. Every file the manifest lists is verified (sha256) as it is read and copied: ``model.onnx``,
   its external data, the variants and what they use; files the manifest does not list (reports,
   plots, anything else in the directory) are left behind.
2. Without golden data (``golden=False``), ``golden.npz`` and ``golden_layers.npz`` stay behind,
   and the manifest's ``golden`` and ``layers.golden`` blocks name no file and say why, so that
   parity and localize say in one line where the data is: the full bundle. The map of tensors
   to modules (``layers.modules``) stays: ``parity --localize --against`` needs no golden data.
3. The copy is written with `BundleWriter` (atomically, manifest last) and must not replace
   ``source`` itself; an existing ``out`` is replaced only with ``force``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle.manifest import MANIFEST
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.bundle.write import BundleWriter
from onnxedge.runtime.errors import OnnxEdgeError, found_at


@dataclasses.dataclass(frozen=True)
class PackResult:
    """What `pack_bundle` wrote: the files (name -> bytes), and those it left behind."""

    out: Path
    files: Mapping[str, int]
    left_out: tuple[str, ...]
    golden: bool

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "files": dict(self.files),
            "left_out": list(self.left_out),
            "golden": self.golden,
            "total_bytes": self.total_bytes,
        }


def golden_files(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The golden data files the manifest names: ``golden.npz`` and ``golden_layers.npz``."""
    layers = manifest.get("layers")
    blocks = [manifest.get("golden"), layers.get("golden") if isinstance(layers, Mapping) else None]
    return tuple(str(b["file"]) for b in blocks if isinstance(b, Mapping) and b.get("file"))


def pack_bundle(
    source: str | Path, out: str | Path, *, golden: bool = True, force: bool = False
) -> PackResult:
    """Copy what a device needs from the bundle ``source`` into a new bundle at ``out``."""
    bundle = Bundle.open(source)
    out = Path(out)
    if out.resolve() == bundle.path.resolve():
        raise OnnxEdgeError(f"--out {out}: expected another directory than the bundle, found it")
    if out.resolve().is_relative_to(bundle.path.resolve()):  # it would change what it copies
        raise OnnxEdgeError(
            f"--out {out}: expected a directory outside the bundle {bundle.path}, found one "
            "inside it"
        )
    if out.exists() and not out.is_dir():
        raise OnnxEdgeError(
            f"--out {out}: expected a new or empty directory, found {found_at(out)}"
        )
    if out.exists() and not force and any(out.iterdir()):
        raise OnnxEdgeError(
            f"--out {out}: expected a new or empty directory, found one that holds files "
            "(--force replaces a bundle there)"
        )
    dropped = () if golden else golden_files(bundle.manifest)
    manifest = copy.deepcopy(dict(bundle.manifest))
    if not golden:
        _without_golden(manifest, bundle.path)
    with BundleWriter(out, replace=force) as writer:
        for name in bundle.manifest["files"]:  # 1.
            if name not in dropped:
                writer.write_bytes(name, bundle.read_bytes(name))  # the bytes it verified
        writer.manifest.update({k: v for k, v in manifest.items() if k != "files"})
        files = {name: entry["bytes"] for name, entry in writer.files.items()}
    files[MANIFEST] = (out / MANIFEST).stat().st_size
    Bundle.open(out)  # 3. the copy verifies as a bundle does
    return PackResult(out=out, files=files, left_out=dropped, golden=golden)


def _without_golden(manifest: dict[str, Any], source: Path) -> None:
    """2.: the golden blocks of a bundle packed without its golden data (a block that already
    names no file keeps its reason)."""
    reason = (
        f"packed without it by onnxedge pack --no-golden from {source}; use that full bundle, "
        "which has it"
    )
    layers = manifest.get("layers")
    for owner, key in ((manifest, "golden"), (layers, "golden")):
        block = owner.get(key) if isinstance(owner, dict) else None
        if isinstance(block, Mapping) and block.get("file"):
            owner[key] = {**block, "file": None, "reason": reason}
    if not isinstance(manifest.get("golden"), Mapping):
        manifest["golden"] = {"file": None, "reason": reason}
