"""The bundle: a directory with ``model.onnx``, ``manifest.json`` and the files the manifest lists.

A bundle is complete exactly when its ``manifest.json`` exists: `BundleWriter` builds the directory
under a temporary name beside the target, writes the manifest last and renames the directory into
place, so an export that fails or is killed midway never leaves a directory that looks complete.

`Bundle.open` is the one way in: every command and the `Classifier` go through it, and it verifies,
before anything runs,

1. that every path the manifest names is a relative path that resolves inside the bundle (no
   ``..``, no absolute path, no symlink that leaves it), before any of them is opened or hashed;
2. the sha256 of ``model.onnx`` and of every external-data file it uses, each of which must be
   listed in the manifest (`onnxedge.runtime.bundle_model`);
3. that the model's input and output (names, element types, ranks, static dims) are the ones the
   manifest states.

Other listed files (``golden.npz``) are verified when they are used (`Bundle.file`). Messages name
files outside the bundle by path only: nothing outside is read, so neither its contents nor its
hashes can appear in them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle_verify import (
    check_file_names,
    check_io,
    confined,
    external_data_files,
    name_problem,
    read_model,
    regular_file,
    verify_model,
    verify_sha256,
)
from onnxedge.runtime.errors import BundleError, OnnxEdgeError
from onnxedge.runtime.hashing import sha256_bytes, sha256_file
from onnxedge.runtime.outputs import BINARY_KINDS, SIGMOID_PROBABILITY, manifest_kind
from onnxedge.runtime.variants.manifest import FP32, VariantEntry, read_variants, variant_key

log = logging.getLogger(__name__)

FORMAT = "onnxedge-bundle"
FORMAT_VERSION = 1
# A bundle with variants (`onnxedge optimize`) is format 2, so that an onnxedge that knows nothing
# of variants refuses it instead of ignoring them; one without stays 1, readable by older ones.
VARIANTS_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)  # what this onnxedge reads; anything newer is refused
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

    1. An existing directory at ``out`` is replaced only if it is itself a bundle or empty, so a
       typo in ``--out`` cannot delete unrelated files. The new bundle keeps the permissions of
       the directory it replaces (mode, and group where this user can set it); one owned by
       another user, or by a group this user cannot give, is refused before anything is written.
    2. Writers to one ``out`` are serialised by a lock file beside it (``.NAME.onnxedge-lock``,
       removed by its holder), held from `__enter__` to the end of `__exit__`; one that waits
       longer than ``lock_timeout`` seconds fails with a message saying so. The slow part of an
       export runs before the `with` block, so concurrent exports overlap except for their
       writes.
    3. Under the lock, temporary directories that a killed writer left beside ``out`` are
       removed: no live writer can own them then. (The lock is flock(2): the kernel releases it
       when its holder dies. Where fcntl is missing, neither 2. nor 3. applies.)
    """

    def __init__(self, out: str | Path, *, lock_timeout: float = 120.0) -> None:
        self.out = Path(out)
        if self.out.is_symlink() and self.out.is_dir():
            self.out = self.out.resolve()  # replace the directory it points to, keep the link
        self.lock_timeout = lock_timeout
        self.manifest: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
        self.files: dict[str, dict[str, Any]] = {}
        self._tmp: Path | None = None
        self._lock: _TargetLock | None = None

    def check_target(self) -> None:
        """Refuse early an ``out`` that is not a bundle to replace, or where nothing can be
        written; `__enter__` does the same, so this only saves a slow export from failing late."""
        if self.out.is_symlink() and not self.out.exists():
            raise OnnxEdgeError(
                f"refusing to write {self.out}: expected a missing or empty directory or an "
                "onnxedge bundle, found a symbolic link to nothing"
            )
        if self.out.exists() and not _replaceable(self.out):
            raise OnnxEdgeError(
                f"refusing to overwrite {self.out}: expected a missing or empty directory or an "
                "onnxedge bundle, found other files"
            )
        if self.out.exists():
            _check_owner(self.out)
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            probe = tempfile.mkdtemp(prefix=_temp_prefix(self.out, "probe"), dir=self.out.parent)
            with contextlib.suppress(FileNotFoundError):  # a writer holding the lock cleaned up
                os.rmdir(probe)
        except OSError as e:
            raise OnnxEdgeError(
                f"cannot write the bundle to {self.out}: {e.strerror or e}"
            ) from None

    def __enter__(self) -> BundleWriter:
        self.check_target()  # also makes the parent directory
        self._lock = _TargetLock(self.out, self.lock_timeout)
        try:
            self.check_target()  # again: another writer may have finished meanwhile
            _remove_stale_temporaries(self.out)
            self._tmp = Path(
                tempfile.mkdtemp(prefix=_temp_prefix(self.out, "tmp"), dir=self.out.parent)
            )
        except OSError as e:
            self._release()
            raise OnnxEdgeError(
                f"cannot write the bundle to {self.out}: {e.strerror or e}"
            ) from None
        except BaseException:
            self._release()
            raise
        return self

    @property
    def tmp_dir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("BundleWriter used outside its `with` block")
        return self._tmp

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write one file of the bundle and record its sha256; returns the sha256."""
        target = self._member(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        digest = sha256_bytes(data)
        self.files[name] = {"sha256": digest, "bytes": len(data)}
        return digest

    def add_file(self, name: str) -> str:
        """Record a file something else wrote into `tmp_dir` (e.g. numpy's savez)."""
        path = self._member(name)
        digest = sha256_file(path)
        self.files[name] = {"sha256": digest, "bytes": path.stat().st_size}
        return digest

    def _member(self, name: str) -> Path:
        problem = name_problem(name)
        if problem:  # what `Bundle.open` would refuse is not written
            raise ValueError(f"expected a relative path inside the bundle, found {problem}")
        return self.tmp_dir / name

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        tmp = self.tmp_dir
        try:
            if exc_type is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            try:
                self.manifest["files"] = dict(sorted(self.files.items()))
                (tmp / MANIFEST).write_bytes(manifest_json(self.manifest))
                for path in (p for p in tmp.rglob("*") if p.is_file()):
                    with open(path, "rb") as f:
                        os.fsync(f.fileno())
                _move_into_place(tmp, self.out)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise OnnxEdgeError(
                    f"cannot write the bundle to {self.out}: {e.strerror or e}"
                ) from None
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _replaceable(path: Path) -> bool:
    if path.is_dir():
        return not any(path.iterdir()) or (path / MANIFEST).is_file()
    return False


def _temp_prefix(out: Path, kind: str) -> str:
    return f".{out.name}.onnxedge-{kind}-"


_TEMP_KINDS = ("tmp", "old", "probe")


def _remove_stale_temporaries(out: Path) -> None:
    """3. of `BundleWriter`: the temporary directories of writers to ``out`` that died (mkdtemp's
    names: the prefix and 8 random characters)."""
    pattern = re.compile(
        rf"\.{re.escape(out.name)}\.onnxedge-(?:{'|'.join(_TEMP_KINDS)})-[A-Za-z0-9_]{{8}}"
    )
    for entry in out.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            log.info("removing %s, left by an export to %s that did not finish", entry, out)
            shutil.rmtree(entry, ignore_errors=True)


class _TargetLock:
    """2. of `BundleWriter`: an exclusive flock on ``.NAME.onnxedge-lock`` beside ``out``, waited
    for up to ``timeout`` seconds. The holder removes the file when it is done, so none is left
    behind; a waiter that then finds it locked a removed file tries again on the new one. Where
    there is no fcntl (not POSIX) it locks nothing."""

    def __init__(self, out: Path, timeout: float) -> None:
        self.out = out
        self.path = out.parent / f".{out.name}.onnxedge-lock"
        self.timeout = timeout
        self.fd: int | None = None
        deadline = time.monotonic() + timeout
        while self.fd is None:
            self.fd = self._try_once(deadline)

    def _try_once(self, deadline: float) -> int | None:
        try:
            import fcntl
        except ImportError:
            return -1
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OnnxEdgeError(
                f"cannot write the bundle to {self.out}: {e.strerror or e}"
            ) from None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise OnnxEdgeError(
                            f"cannot write the bundle to {self.out}: another export to it holds "
                            f"{self.path} and has not finished within "
                            f"{self.timeout:g} s; try again when it has"
                        ) from None
                    log.info("waiting for another export to %s to finish writing", self.out)
                    time.sleep(0.05)
            held = os.fstat(fd)
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the previous holder removed this file: lock the one now there
        return None

    def release(self) -> None:
        if self.fd is None:
            return
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # still holding it: nobody else can have it now
            os.close(self.fd)
        self.fd = None


def _check_owner(out: Path) -> None:
    """1. of `BundleWriter`: an existing target this user could not give the same owner and
    group to is refused (root can give any)."""
    if not hasattr(os, "geteuid") or os.geteuid() == 0:
        return
    st = out.stat()
    if st.st_uid != os.geteuid():
        raise OnnxEdgeError(
            f"refusing to replace {out}: it belongs to another user (uid {st.st_uid}), and the "
            "new bundle would not; remove it or choose another --out"
        )
    if st.st_gid not in (os.getegid(), *os.getgroups()):
        raise OnnxEdgeError(
            f"refusing to replace {out}: it belongs to group {st.st_gid}, which this user cannot "
            "give the new bundle; remove it or choose another --out"
        )


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 suits secrets, not shared artifacts
        os.rename(tmp, out)
        return
    # 1.: the new bundle takes the old directory's permissions, then the swap: the old one steps
    # aside, the new one takes its name, then the old one goes.
    st = out.stat()
    if (st.st_uid, st.st_gid) != (os.stat(tmp).st_uid, os.stat(tmp).st_gid):
        os.chown(tmp, st.st_uid if os.geteuid() == 0 else -1, st.st_gid)
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    old = Path(tempfile.mkdtemp(prefix=_temp_prefix(out, "old"), dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# Element types a manifest may state (numpy's names for ONNX's tensor types).
DTYPES = (
    "float32",
    "float64",
    "float16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)
# A manifest is a few kilobytes; anything far larger is not one (and is not read into memory).
MAX_MANIFEST_BYTES = 16 << 20


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
            if not isinstance(name, str) or dtype not in DTYPES or not isinstance(shape, list):
                raise TypeError
            dims = tuple(d if isinstance(d, str) else _positive_int(d) for d in shape)
        except (KeyError, TypeError, ValueError):
            raise BundleError(
                f"the manifest's {what!r} block: expected name, shape (a list of dims) and dtype "
                f"(one of {', '.join(DTYPES)}), found {block!r}"
            ) from None
        return cls(name=name, shape=dims, dtype=dtype)

    def describe(self) -> str:
        dims = ", ".join("N" if isinstance(d, str) else str(d) for d in self.shape)
        return f"{self.dtype} array of shape [{dims}]"


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(value)
    return value


def _check_labels(labels: Any, kind: str, output: TensorSpec, source: str) -> None:
    """One output: a threshold in [0, 1]. K outputs: K distinct class names."""
    if kind in BINARY_KINDS:
        if not isinstance(labels, dict) or not (
            _number(labels.get("threshold")) and 0.0 <= labels["threshold"] <= 1.0
        ):
            raise BundleError(
                f"{source}: expected labels with a threshold in [0, 1], found {labels!r}"
            )
        return
    classes = output.shape[-1] if output.shape else None
    names = labels.get("classes") if isinstance(labels, dict) else None
    if not (
        isinstance(names, list)
        and all(isinstance(n, str) for n in names)
        and len(set(names)) == len(names) == classes
    ):
        raise BundleError(
            f"{source}: expected labels with {classes} distinct class names for the {kind} "
            f"output, found {labels!r}"
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A bundle on disk, opened with `open`: its manifest validated, every path it names confined
    to the directory, ``model.onnx`` and its external data verified against their sha256 and its
    input and output against the manifest. Other files are verified by `file` when used.

    ``input``/``output`` are the manifest's `TensorSpec`s, ``output_kind`` what the output holds
    (`onnxedge.runtime.outputs`), ``labels`` its labels (one output: a ``threshold`` in [0, 1];
    K outputs: K ``classes``), ``preprocessing`` what `onnxedge.runtime.preprocess` applies, and
    ``external_data`` the external-data files the model uses (verified).
    """

    path: Path
    manifest: Mapping[str, Any]
    input: TensorSpec
    output: TensorSpec
    labels: Mapping[str, Any]
    preprocessing: Mapping[str, Any]
    external_data: tuple[str, ...] = ()
    variants: Mapping[str, VariantEntry] = dataclasses.field(default_factory=dict)
    output_kind: str = SIGMOID_PROBABILITY

    @property
    def threshold(self) -> float:
        if "threshold" not in self.labels:
            raise BundleError(
                f"{self.path}: a {self.output_kind} model has class names, not a threshold"
            )
        return float(self.labels["threshold"])

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names: K of them, or (negative, positive) for one output."""
        if "classes" in self.labels:
            return tuple(self.labels["classes"])
        return (
            str(self.labels.get("negative", "negative")),
            str(self.labels.get("positive", "positive")),
        )

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        """The one reader: the checks of the module docstring, in that order; any failure is a
        `BundleError` (one line)."""
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"expected a bundle directory, found no directory at {path}")
        manifest_path = path / MANIFEST
        if not manifest_path.exists() and not manifest_path.is_symlink():
            raise BundleError(
                f"{path} is not a complete bundle: {MANIFEST} is missing "
                "(an export that did not finish, or not a bundle)"
            )
        real = confined(path, MANIFEST, what="the bundle's manifest is")
        size = regular_file(real, manifest_path, why="every bundle has one").st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(
                f"{manifest_path}: expected a manifest of at most {MAX_MANIFEST_BYTES:,} bytes, "
                f"found {size:,}"
            )
        try:
            manifest = json.loads(real.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"cannot read {manifest_path}: {e}") from None
        bundle = cls.from_manifest(path, manifest, source=str(manifest_path))
        for name in manifest["files"]:  # 1. confinement of every listed path, nothing read yet
            confined(path, name)
        bundle.verify(MODEL)  # 2.
        return dataclasses.replace(bundle, external_data=verify_model(bundle))  # 2. and 3.

    @classmethod
    def from_manifest(cls, path: Path, manifest: Any, *, source: str = MANIFEST) -> Bundle:
        """Validate a manifest's structure (the file names lexically; `open` checks them on
        disk); each failure names the field, what was expected and what was found."""
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        if not isinstance(manifest, dict) or found != FORMAT:
            raise BundleError(
                f"{source} is not an onnxedge manifest: expected format {FORMAT!r}, found {found!r}"
            )
        _check_format_version(manifest, source)
        _check_files(manifest.get("files"), source)
        variants = read_variants(manifest, source, manifest["files"])
        if variants and manifest["format_version"] < VARIANTS_FORMAT_VERSION:
            raise BundleError(
                f"{source}: lists variants but has format_version {manifest['format_version']}; "
                f"expected {VARIANTS_FORMAT_VERSION} for a bundle with variants"
            )
        output = TensorSpec.from_manifest(manifest.get("output"), "output")
        try:
            kind = manifest_kind(manifest.get("output"))
        except OnnxEdgeError as e:
            raise BundleError(f"{source}: {e}") from None
        labels = manifest.get("labels")
        _check_labels(labels, kind, output, source)
        return cls(
            path=path,
            manifest=manifest,
            input=TensorSpec.from_manifest(manifest.get("input"), "input"),
            output=output,
            labels=labels,
            preprocessing=_check_preprocessing(manifest.get("preprocessing"), source),
            output_kind=kind,
            variants=variants,
        )

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    def variant_model(self, variant: str | None = None) -> Path:
        """The model file of ``variant`` (None or ``fp32``: ``model.onnx``, verified by `open`),
        verified before it is returned: listed with its sha256 and matching it, inside the
        bundle, and (ONNX files) its external data verified and its input and output the
        manifest's. An unknown name is an error naming the variants the bundle has."""
        key = variant_key(variant)
        if key == FP32:
            return self.model_path
        entry = self.variants.get(key)
        if entry is None:
            have = ", ".join([FP32, *self.variants])
            raise BundleError(f"{self.path} has no {key!r} variant; it has: {have}")
        path = self.file(entry.file)
        if entry.format == "onnx":
            model = read_model(path)
            external_data_files(self, model)
            check_io(model, self.input, self.output, source=path)
        return path

    def file(self, name: str) -> Path:
        """The path of a file the manifest lists, confined to the bundle and its sha256
        verified."""
        self.verify(name)
        return self.path / name

    def verify(self, name: str) -> None:
        """A listed file: inside the bundle (checked first), a regular file, its sha256 the
        manifest's."""
        entry = self.manifest["files"].get(name)
        if entry is None:
            raise BundleError(f"{self.path / MANIFEST} lists no {name}")
        verify_sha256(confined(self.path, name), entry["sha256"], self.path / name)


def _check_format_version(manifest: Mapping[str, Any], source: str) -> None:
    """A format version this onnxedge reads; a newer one is refused with what to do about it."""
    version = manifest.get("format_version")
    readable = f"{READABLE_FORMAT_VERSIONS[0]} to {READABLE_FORMAT_VERSIONS[-1]}"
    if isinstance(version, int) and not isinstance(version, bool):
        if version > READABLE_FORMAT_VERSIONS[-1]:
            raise BundleError(
                f"{source}: expected format_version {readable}, found {version}: the bundle was "
                "written by a newer onnxedge; upgrade onnxedge to read it"
            )
        if version in READABLE_FORMAT_VERSIONS:
            return
    raise BundleError(f"{source}: expected format_version {readable}, found {version!r}")


def _check_files(files: Any, source: str) -> None:
    if not isinstance(files, dict) or MODEL not in files:
        raise BundleError(
            f"{source}: expected 'files' mapping each file to its sha256, with {MODEL}; "
            f"found {type(files).__name__ if not isinstance(files, dict) else sorted(files)}"
        )
    check_file_names(files, source)


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
