"""Error types. A user error is `OnnxEdgeError`: the CLI prints its message on one line and exits 1.

Anything else that escapes is a bug in onnxedge and keeps its traceback.
"""

from __future__ import annotations


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


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, for one-line error reports."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def not_onnx(path: object, e: BaseException) -> str:
    """Why ``path`` is not an ONNX model, from onnx.load's exception: protobuf's own words less
    its "Error parsing message with type 'onnx.ModelProto': " (``Wire format was corrupt``)."""
    reason = first_line(e)
    prefix = "Error parsing message with type 'onnx.ModelProto': "
    return f"{path} is not an ONNX model: protobuf says: {reason.removeprefix(prefix)}"
