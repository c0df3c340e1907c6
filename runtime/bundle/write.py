"""Writing bundles and artifacts so that a reader never sees a part: `atomic_write_bytes` for one
file, `BundleWriter` for a bundle directory (built beside the target, manifest last, renamed into
place), with its lock (`onnxedge.runtime.bundle.lock`) and the removal of temporaries a killed
writer left.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from onnxedge.runtime.bundle.hashing import sha256_bytes, sha256_file
from onnxedge.runtime.bundle.lock import _holds, _TargetLock, lock_wait
from onnxedge.runtime.bundle.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    manifest_json,
    name_problem,
)
from onnxedge.runtime.errors import OnnxEdgeError

log = logging.getLogger(__name__)

# what writing or syncing a file can fail with (the disk, not the caller's block); another
# OSError the block raises is the block's, and goes on as it is
_WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS, errno.EPIPE, errno.EBADF}
)


def umask() -> int:
    """The process's umask, read from /proc/self/status where there is one (setting it to read it
    back, the only other way, is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def replacing_mode(target: str | Path, *, directory: bool = False) -> int:
    """The mode for what replaces ``target``: the old one's where there is one, else what
    ``open`` or ``mkdir`` would give (0666 or 0777 less the umask); mkstemp's and mkdtemp's
    owner-only modes suit secrets, not artifacts."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(target).st_mode)
    return (0o777 if directory else 0o666) & ~umask()


def _writing_failed(e: OSError, tmp: str | None = None) -> bool:
    """Whether ``e`` is the write's own failure: no file named (or the temporary one) and an
    errno that writing gives."""
    return e.filename in (None, tmp) and e.errno in _WRITE_ERRNOS


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    A symbolic link is kept: the file it points to is replaced. A path that is not a regular
    file (``/dev/stdout``, a named pipe, a device) is written as it is, in place: replacing it
    would put a regular file where the device was."""
    with atomic_file(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file open for writing (``mode``: ``w`` for text in UTF-8, ``wb``) whose contents take
    ``path``'s place only when the block ends without an error, as `atomic_write_bytes` says: a
    temporary file beside the target renamed over it, the file a link points to replaced, and a
    path that is not a regular file (a device, a pipe) written in place as the block writes."""
    path = Path(path)
    encoding = None if "b" in mode else "utf-8"
    if path.is_dir():
        raise OnnxEdgeError(f"cannot write {path}: expected a file name, found a directory")
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            f = open(path, mode, encoding=encoding)  # noqa: SIM115 (closed below, errors worded)
        except OSError as e:
            raise OnnxEdgeError(f"cannot write {path}: {e.strerror or e}") from None
        try:
            with f:
                yield f
        except OSError as e:
            if not _writing_failed(e):
                raise
            raise OnnxEdgeError(f"cannot write {path}: {e.strerror or e}") from None
        return
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise OnnxEdgeError(f"cannot write {path}: {e.strerror or e}") from None
    finishing = False
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            finishing = True
            f.flush()
            os.fchmod(f.fileno(), replacing_mode(target))
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if not (finishing or _writing_failed(e, tmp)):  # the block's own error, not the write's
            raise
        raise OnnxEdgeError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable(path: str | Path | None) -> None:
    """Refuse, before any work, a file `atomic_write_bytes` could not write: a directory at
    ``path``, or a folder where no file can be made (a temporary probe is made and removed).
    None: nothing to check."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise OnnxEdgeError(f"cannot write {path}: expected a file name, found a directory")
    if path.exists() and not path.is_file():  # a device or a pipe: written in place
        if not os.access(path, os.W_OK):
            raise OnnxEdgeError(f"cannot write {path}: Permission denied")
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OnnxEdgeError(f"cannot write {path}: {ancestor} is not a writable directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OnnxEdgeError(f"cannot write {path}: {e.strerror or e}") from None


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
       removed by its holder, which writes its pid and command into it), held from `__enter__`
       to the end of `__exit__`, or for a whole command with `bundle_lock`; one that waits
       longer than ``lock_timeout`` seconds (default `lock_wait`: ``$ONNXEDGE_LOCK_WAIT``, else
       120) fails with one line naming the holder.
    3. Under the lock, temporary directories that a killed writer left beside ``out`` are
       removed: no live writer can own them then. (The lock is flock(2): the kernel releases it
       when its holder dies. Where fcntl is missing, neither 2. nor 3. applies.)
    4. ``replace=False`` (a command without ``--force``, which refused an existing ``out``
       before its work): an ``out`` that holds anything once the lock is held is refused, so
       that of two runs started together the second fails instead of replacing the first's
       bundle.
    """

    def __init__(
        self, out: str | Path, *, lock_timeout: float | None = None, replace: bool = True
    ) -> None:
        self.out = Path(out)
        self.replace = replace
        if self.out.is_symlink() and self.out.is_dir():
            self.out = self.out.resolve()  # replace the directory it points to, keep the link
        self.lock_timeout = lock_wait() if lock_timeout is None else lock_timeout
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
            check_owner(self.out)
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            probe = tempfile.mkdtemp(prefix=temp_prefix(self.out, "probe"), dir=self.out.parent)
            with contextlib.suppress(FileNotFoundError):  # a writer holding the lock cleaned up
                os.rmdir(probe)
        except OSError as e:
            raise OnnxEdgeError(
                f"cannot write the bundle to {self.out}: {e.strerror or e}"
            ) from None

    def __enter__(self) -> BundleWriter:
        self.check_target()  # also makes the parent directory
        if not _holds(self.out):  # else this thread holds it already, for its whole run
            self._lock = _TargetLock(self.out, self.lock_timeout)
        try:
            self.check_target()  # again: another writer may have finished meanwhile
            if not self.replace:  # 4.
                refuse_written_meanwhile(self.out)
            remove_stale_temporaries(self.out)
            self._tmp = Path(
                tempfile.mkdtemp(prefix=temp_prefix(self.out, "tmp"), dir=self.out.parent)
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
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except OSError as e:
            raise OnnxEdgeError(
                f"cannot write the bundle to {self.out}: {name}: {e.strerror or e}"
            ) from None
        digest = sha256_bytes(data)
        self.files[name] = {"sha256": digest, "bytes": len(data)}
        return digest

    def add_file(self, name: str) -> str:
        """Record a file something else wrote into `tmp_dir` (e.g. numpy's savez)."""
        path = self._member(name)
        try:
            digest = sha256_file(path)
            size = path.stat().st_size
        except OSError as e:
            raise OnnxEdgeError(
                f"cannot write the bundle to {self.out}: {name}: {e.strerror or e}"
            ) from None
        self.files[name] = {"sha256": digest, "bytes": size}
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
                move_into_place(tmp, self.out)
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


def refuse_written_meanwhile(out: Path) -> None:
    """4. of `BundleWriter`: an error where ``out`` holds anything now (the caller holds its
    lock; it was missing or empty when the command started)."""
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise OnnxEdgeError(
            f"{out} exists: another run wrote it while this one worked; give --force to "
            "replace it, or another path"
        )


def _replaceable(path: Path) -> bool:
    if path.is_dir():
        return not any(path.iterdir()) or (path / MANIFEST).is_file()
    return False


def temp_prefix(out: Path, kind: str) -> str:
    return f".{out.name}.onnxedge-{kind}-"


_TEMP_KINDS = ("tmp", "old", "probe")


def remove_stale_temporaries(out: Path) -> None:
    """3. of `BundleWriter`: the temporary directories of writers to ``out`` that died (mkdtemp's
    names: the prefix and 8 random characters)."""
    pattern = re.compile(
        rf"\.{re.escape(out.name)}\.onnxedge-(?:{'|'.join(_TEMP_KINDS)})-[A-Za-z0-9_]{{8}}"
    )
    for entry in out.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            log.info("removing %s, left by a writer to %s that did not finish", entry, out)
            shutil.rmtree(entry, ignore_errors=True)


# Locks this thread holds, by lock file: `bundle_lock` inside `bundle_lock` (a command that locks
# its whole run, then writes with `BundleWriter`) takes the same lock once, not twice (flock
# locks per open file, so a second open would wait for itself).
def check_owner(out: Path, what: str = "bundle") -> None:
    """1. of `BundleWriter` (and of `data synth`'s set, ``what``): an existing target this user
    could not give the same owner and group to is refused (root can give any)."""
    if not hasattr(os, "geteuid") or os.geteuid() == 0:
        return
    st = out.stat()
    if st.st_uid != os.geteuid():
        raise OnnxEdgeError(
            f"refusing to replace {out}: it belongs to another user (uid {st.st_uid}), and the "
            f"new {what} would not; remove it or choose another --out"
        )
    if st.st_gid not in (os.getegid(), *os.getgroups()):
        raise OnnxEdgeError(
            f"refusing to replace {out}: it belongs to group {st.st_gid}, which this user cannot "
            f"give the new {what}; remove it or choose another --out"
        )


def move_into_place(tmp: Path, out: Path) -> None:
    """Directory ``tmp`` (made beside ``out``) renamed to ``out``: a new one with mkdir's mode, or
    in place of an existing one with its mode and owner, swapped in one step where the system can
    (Linux's RENAME_EXCHANGE), so a reader finds the old or the new whole, never a mix. The
    caller has refused an ``out`` of another owner (`check_owner`) before its work."""
    if not out.exists():
        os.chmod(tmp, replacing_mode(out, directory=True))
        os.rename(tmp, out)
        return
    # 1.: the new bundle takes the old directory's permissions, then the swap: in one step where
    # the system can (a reader always finds a whole bundle at ``out``), else the old one steps
    # aside and the new one takes its name (a reader may find none for a moment); then the old
    # one goes.
    st = out.stat()
    if (st.st_uid, st.st_gid) != (os.stat(tmp).st_uid, os.stat(tmp).st_gid):
        os.chown(tmp, st.st_uid if os.geteuid() == 0 else -1, st.st_gid)
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    if _exchange(tmp, out):  # one step: the path names the old bundle, then the new one
        shutil.rmtree(tmp, ignore_errors=True)  # what was the old one
        return
    old = Path(tempfile.mkdtemp(prefix=temp_prefix(out, "old"), dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the directories at ``a`` and ``b`` in one step (Linux's renameat2 with
    RENAME_EXCHANGE), so that a reader never finds ``b`` missing; False where the C library or
    the file system cannot (the caller then renames twice)."""
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (ImportError, OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))
