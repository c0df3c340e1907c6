"""Writing bundles and artifacts so that a reader never sees a part: `atomic_write_bytes` for one
file, `BundleWriter` for a bundle directory (built beside the target, manifest last, renamed into
place), with its lock and the removal of temporaries a killed writer left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle.hashing import sha256_bytes, sha256_file
from onnxedge.runtime.bundle.manifest import FORMAT, FORMAT_VERSION, MANIFEST, manifest_json
from onnxedge.runtime.bundle.verify import name_problem
from onnxedge.runtime.errors import OnnxEdgeError

log = logging.getLogger(__name__)


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
