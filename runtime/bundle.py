"""The bundle: a directory with ``model.onnx``, ``manifest.json`` and the files the manifest lists.

A bundle is complete exactly when its ``manifest.json`` exists: `BundleWriter` builds the directory
under a temporary name beside the target, writes the manifest last and renames the directory into
place, so an export that fails or is killed midway never leaves a directory that looks complete.
Every file the manifest lists carries its sha256: `Bundle.open` validates the manifest and
verifies ``model.onnx``; each other file is verified when it is used (`Bundle.file`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxedge.runtime.errors import BundleError, OnnxEdgeError
from onnxedge.runtime.hashing import sha256_bytes, sha256_file

FORMAT = "onnxedge-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL = "model.onnx"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    if path.is_dir():
        raise OnnxEdgeError(f"cannot write {path}: expected a file name, found a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OnnxEdgeError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 suits secrets, not shared artifacts
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OnnxEdgeError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def manifest_json(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()


class BundleWriter:
    """Builds a bundle in a temporary sibling directory and moves it into place on success.

    Usage::

        with BundleWriter(out) as w:
            w.write_bytes("model.onnx", data)
            w.manifest["model"] = "smile_cnn"
        # here `out` holds the complete bundle; on an exception it is untouched

    An existing directory at ``out`` is replaced only if it is itself a bundle (or empty), so a typo
    in ``--out`` cannot delete unrelated files.
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.manifest: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
        self.files: dict[str, dict[str, Any]] = {}
        self._tmp: Path | None = None

    def check_target(self) -> None:
        """Refuse early an ``out`` that is not a bundle to replace, or where nothing can be
        written; `__enter__` does the same, so this only saves a slow export from failing late."""
        if self.out.exists() and not _replaceable(self.out):
            raise OnnxEdgeError(
                f"refusing to overwrite {self.out}: expected a missing or empty directory or an "
                "onnxedge bundle, found other files"
            )
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            probe = tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent)
            os.rmdir(probe)
        except OSError as e:
            raise OnnxEdgeError(
                f"cannot write the bundle to {self.out}: {e.strerror or e}"
            ) from None

    def __enter__(self) -> BundleWriter:
        self.check_target()
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        except OSError as e:
            raise OnnxEdgeError(
                f"cannot write the bundle to {self.out}: {e.strerror or e}"
            ) from None
        return self

    @property
    def tmp_dir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("BundleWriter used outside its `with` block")
        return self._tmp

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write one file of the bundle and record its sha256; returns the sha256."""
        target = self.tmp_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        digest = sha256_bytes(data)
        self.files[name] = {"sha256": digest, "bytes": len(data)}
        return digest

    def add_file(self, name: str) -> str:
        """Record a file something else wrote into `tmp_dir` (e.g. numpy's savez)."""
        path = self.tmp_dir / name
        digest = sha256_file(path)
        self.files[name] = {"sha256": digest, "bytes": path.stat().st_size}
        return digest

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        tmp = self.tmp_dir
        if exc_type is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        try:
            self.manifest["files"] = dict(sorted(self.files.items()))
            (tmp / MANIFEST).write_bytes(manifest_json(self.manifest))
            for path in (p for p in tmp.rglob("*") if p.is_file()):
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o755)
            _move_into_place(tmp, self.out)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OnnxEdgeError(
                f"cannot write the bundle to {self.out}: {e.strerror or e}"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _replaceable(path: Path) -> bool:
    if path.is_dir():
        return not any(path.iterdir()) or (path / MANIFEST).is_file()
    return False


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    # Swap: the old bundle steps aside, the new one takes its name, then the old one goes.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the manifest states it; string dims are symbolic."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_manifest(cls, block: Any, what: str) -> TensorSpec:
        try:
            name, shape, dtype = block["name"], block["shape"], block["dtype"]
            if not isinstance(name, str) or not isinstance(dtype, str):
                raise TypeError
            dims = tuple(d if isinstance(d, str) else _positive_int(d) for d in shape)
        except (KeyError, TypeError, ValueError):
            raise BundleError(
                f"the manifest's {what!r} block: expected name, shape and dtype, found {block!r}"
            ) from None
        return cls(name=name, shape=dims, dtype=dtype)

    def describe(self) -> str:
        dims = ", ".join("N" if isinstance(d, str) else str(d) for d in self.shape)
        return f"{self.dtype} array of shape [{dims}]"


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(value)
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A bundle on disk whose manifest has been read and validated (and, by default, its
    ``model.onnx`` verified against its sha256; other files are verified by `file` when used).

    ``input``/``output`` are the manifest's `TensorSpec`s, ``labels`` its labels (with
    ``threshold`` in [0, 1]) and ``preprocessing`` what `onnxedge.runtime.preprocess` applies.
    """

    path: Path
    manifest: Mapping[str, Any]
    input: TensorSpec
    output: TensorSpec
    labels: Mapping[str, Any]
    preprocessing: Mapping[str, Any]

    @property
    def threshold(self) -> float:
        return float(self.labels["threshold"])

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> Bundle:
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"expected a bundle directory, found no directory at {path}")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(
                f"{path} is not a complete bundle: {MANIFEST} is missing "
                "(an export that did not finish, or not a bundle)"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"cannot read {manifest_path}: {e}") from None
        bundle = cls.from_manifest(path, manifest, source=str(manifest_path))
        if verify:
            bundle.verify(MODEL)
        return bundle

    @classmethod
    def from_manifest(cls, path: Path, manifest: Any, *, source: str = MANIFEST) -> Bundle:
        """Validate a manifest's structure; each failure names the field, what was expected and
        what was found."""
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        if not isinstance(manifest, dict) or found != FORMAT:
            raise BundleError(
                f"{source} is not an onnxedge manifest: expected format {FORMAT!r}, found {found!r}"
            )
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{source}: expected format_version {FORMAT_VERSION}, "
                f"found {manifest.get('format_version')!r}"
            )
        _check_files(manifest.get("files"), source)
        labels = manifest.get("labels")
        if not isinstance(labels, dict) or not (
            _number(labels.get("threshold")) and 0.0 <= labels["threshold"] <= 1.0
        ):
            raise BundleError(
                f"{source}: expected labels with a threshold in [0, 1], found {labels!r}"
            )
        return cls(
            path=path,
            manifest=manifest,
            input=TensorSpec.from_manifest(manifest.get("input"), "input"),
            output=TensorSpec.from_manifest(manifest.get("output"), "output"),
            labels=labels,
            preprocessing=_check_preprocessing(manifest.get("preprocessing"), source),
        )

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    def file(self, name: str, *, verify: bool = True) -> Path:
        """The path of a file the manifest lists, its sha256 verified."""
        if verify:
            self.verify(name)
        return self.path / name

    def verify(self, name: str) -> None:
        entry = self.manifest["files"].get(name)
        if entry is None:
            raise BundleError(f"{self.path / MANIFEST} lists no {name}")
        target = self.path / name
        if not target.is_file():
            raise BundleError(f"{target} is missing (the manifest lists it)")
        try:
            actual = sha256_file(target)
        except OSError as e:
            raise BundleError(f"cannot read {target}: {e.strerror or e}") from None
        if actual != entry["sha256"]:
            raise BundleError(
                f"{target} does not match the manifest: expected sha256 {entry['sha256'][:16]}…, "
                f"found {actual[:16]}…"
            )


def _check_files(files: Any, source: str) -> None:
    if not isinstance(files, dict) or MODEL not in files:
        raise BundleError(
            f"{source}: expected 'files' mapping each file to its sha256, with {MODEL}; "
            f"found {type(files).__name__ if not isinstance(files, dict) else sorted(files)}"
        )
    for name, entry in files.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not (isinstance(digest, str) and len(digest) == 64):
            raise BundleError(
                f"{source}: files[{name!r}]: expected a sha256 (64 hex digits), found {entry!r}"
            )


def _check_preprocessing(spec: Any, source: str) -> Mapping[str, Any]:
    """The structure `onnxedge.runtime.preprocess` relies on; it checks the values it supports."""
    problems = []
    if not isinstance(spec, dict):
        problems.append(f"a mapping, found {spec!r}")
    else:
        resize = spec.get("resize")
        if not (
            isinstance(resize, list)
            and len(resize) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resize)
        ):
            problems.append(f"resize as [height, width], found {resize!r}")
        for key, default in (("mean", [0.0, 0.0, 0.0]), ("std", [1.0, 1.0, 1.0])):
            value = spec.get(key, default)
            if not (isinstance(value, list) and len(value) == 3 and all(map(_number, value))):
                problems.append(f"{key} as three numbers, found {value!r}")
            elif key == "std" and 0 in value:
                problems.append(f"std without zeros, found {value!r}")
        if not _number(spec.get("scale", 1.0 / 255.0)):
            problems.append(f"scale as a number, found {spec.get('scale')!r}")
    if problems:
        raise BundleError(f"{source}: expected preprocessing with {problems[0]}")
    return spec
