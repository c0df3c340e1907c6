"""The writer lock of a bundle's target: one writer per ``--out`` at a time, across processes
(`bundle_lock`, an exclusive lock on a file beside the target that names its holder), re-entrant
within a thread, waiting at most `lock_wait` seconds (``ONNXEDGE_LOCK_WAIT``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from onnxedge.runtime.errors import OnnxEdgeError

log = logging.getLogger(__name__)

_HELD = threading.local()
LOCK_WAIT_ENV = "ONNXEDGE_LOCK_WAIT"
DEFAULT_LOCK_WAIT = 120.0
_HOLDER_CHARS = 80


def lock_wait(default: float = DEFAULT_LOCK_WAIT) -> float:
    """How long a writer waits for another's lock: ``$ONNXEDGE_LOCK_WAIT`` seconds, else
    ``default``; a value that is not a number >= 0 is an error."""
    text = os.environ.get(LOCK_WAIT_ENV)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise OnnxEdgeError(f"${LOCK_WAIT_ENV}: expected seconds >= 0, found {text[:40]!r}")
    return value


@contextlib.contextmanager
def bundle_lock(out: str | Path, timeout: float | None = None) -> Iterator[None]:
    """The one-writer lock of ``out`` (2. of `BundleWriter`), held for the whole block: a command
    that reads a bundle and writes it back (in-place optimize) or that builds one (export) takes it
    before its work, so no other writer can replace the bundle in between and have its work
    lost. Re-entrant within a thread; ``timeout`` None: `lock_wait`."""
    path = _lock_path(Path(out))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OnnxEdgeError(f"cannot write the bundle to {out}: {e.strerror or e}") from None
    held: dict[str, int] = getattr(_HELD, "locks", None) or {}
    _HELD.locks = held
    key = str(path)
    if key in held:
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    lock = _TargetLock(Path(out), lock_wait() if timeout is None else timeout)
    held[key] = 1
    try:
        yield
    finally:
        del held[key]
        lock.release()


def _lock_path(out: Path) -> Path:
    if out.is_symlink() and out.is_dir():
        out = out.resolve()
    return out.parent / f".{out.name}.onnxedge-lock"


def _holds(out: Path) -> bool:
    return str(_lock_path(out)) in (getattr(_HELD, "locks", None) or {})


class _TargetLock:
    """2. of `BundleWriter`: an exclusive flock on ``.NAME.onnxedge-lock`` beside ``out``, waited
    for up to ``timeout`` seconds. The holder writes its pid and command into the file, so a
    writer that gives up can say who holds it, and removes the file when it is done, so none is
    left behind; a waiter that then finds it locked a removed file tries again on the new one.
    The kernel releases a flock when its holder dies, however it dies. Where there is no fcntl
    (not POSIX) it locks nothing."""

    def __init__(self, out: Path, timeout: float) -> None:
        self.out = out
        self.path = _lock_path(out)
        self.timeout = timeout
        self.fd: int | None = None
        deadline = time.monotonic() + timeout
        while self.fd is None:
            self.fd = self._try_once(deadline)
        if self.fd >= 0:
            _write_holder(self.fd)

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
            said = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise OnnxEdgeError(
                            f"cannot write the bundle to {self.out}: {_holder(fd)} holds its "
                            f"lock and did not finish within {self.timeout:g} s "
                            f"(${LOCK_WAIT_ENV}); try again when it has"
                        ) from None
                    if not said:
                        log.warning("waiting for %s to finish writing %s", _holder(fd), self.out)
                        said = True
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


def _write_holder(fd: int) -> None:
    """The holder's pid and command line, into the lock file it holds (best effort: a lock on a
    full disk still locks)."""
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
    text = f"{os.getpid()} {command}"[:500]
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("utf-8", "backslashreplace"), 0)


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote: ``pid 1234 (onnxedge optimize b --int8)``."""
    try:
        text = os.pread(fd, 600, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    if not pid.isdigit():
        return "another writer"
    command = command.encode("ascii", "backslashreplace").decode()
    if len(command) > _HOLDER_CHARS:
        command = command[: _HOLDER_CHARS - 1] + "…"
    return f"pid {pid} ({command})" if command else f"pid {pid}"
