"""Error types. A user error is `OnnxEdgeError`: the CLI prints its message on one line and exits 1.

Anything else that escapes is a bug in onnxedge and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
import stat

from onnxedge.runtime.names import shown


class OnnxEdgeError(Exception):
    """Bad input from the user: a message that says what was expected and what was found."""


class ProviderUnavailable(OnnxEdgeError):
    """The requested execution provider cannot run here (not offered, or it failed to load and
    onnxruntime fell back). Reports mark such a provider skipped; any other load error fails."""


class ArgumentError(OnnxEdgeError, ValueError):
    """A library function called with an argument it does not take (``threads=0``, a threshold
    of NaN). A `ValueError` for Python callers; a command that forgot to check the option first
    still gets one line, not a traceback."""


class BundleError(OnnxEdgeError):
    """A bundle directory is missing, incomplete, or does not match its manifest."""


class ImageReadError(OnnxEdgeError):
    """One image file that cannot be used; ``reason`` says what was expected and what was found.
    The message names the file on one line (`names.shown`); ``path`` is the name as given."""

    def __init__(self, path: object, reason: str) -> None:
        name = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
        if ("\0" if isinstance(name, str) else b"\0") in name:  # no path: bytes of a file?
            name = name[:40] + ("..." if isinstance(name, str) else b"...")  # type: ignore[operator]
        super().__init__(f"{shown(name)}: {reason}")
        self.path = path
        self.reason = reason


# Lines of a library's message that only say where in its sources it was raised (OpenVINO's
# "Exception from src/inference/src/cpp/core.cpp:84:", one per frame, before the reason).
_WHERE_RAISED = re.compile(r"(Exception from|Check '.*' failed at) \S+:\d+:?")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message that says something, for one-line error
    reports: lines naming only the source file a library raised it in are passed over."""
    text = str(e).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = [line for line in lines if not _WHERE_RAISED.fullmatch(line)]
    return (said or lines or [type(e).__name__])[0]


def not_onnx(path: object, e: BaseException) -> str:
    """Why ``path`` is not an ONNX model, from onnx.load's exception: protobuf's own words less
    its "Error parsing message with type 'onnx.ModelProto': " (``Wire format was corrupt``)."""
    reason = first_line(e)
    prefix = "Error parsing message with type 'onnx.ModelProto': "
    return f"{path} is not an ONNX model: protobuf says: {reason.removeprefix(prefix)}"


def found_at(path: str | os.PathLike[str]) -> str:
    """What is at ``path``, for an error that expected a file there ("expected an ONNX file,
    found ..."): ``nothing at P``, ``a directory at P``, ``a named pipe at P``, ``a loop of
    symbolic links at P``, ``a symbolic link to nothing at P``, ``a device at P``, ``a file at
    P`` (a file, but not one the caller takes). Nothing is opened (a named pipe would block)."""
    shown = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"a loop of symbolic links at {shown}"
        if os.path.islink(path):
            return f"a symbolic link to nothing at {shown}"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"nothing at {shown}"
        return f"{shown}, which cannot be read ({e.strerror or e})"
    except ValueError:  # a NUL byte, a lone surrogate: no file has such a name
        return f"{shown!r}, which no file name can be"
    if stat.S_ISDIR(mode):
        return f"a directory at {shown}"
    if stat.S_ISFIFO(mode):
        return f"a named pipe at {shown}"
    if stat.S_ISSOCK(mode):
        return f"a socket at {shown}"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return f"a device at {shown}"
    return f"a file at {shown}"
