"""ONNX Runtime sessions: which execution providers can run here, and building a session on one.

Building a session, running it and comparing results are separate pieces (as in Polygraphy's
loaders, runners and comparators); this module only builds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from onnxedge.runtime.errors import OnnxEdgeError, ProviderUnavailable, first_line

log = logging.getLogger(__name__)

# Short names users type -> ONNX Runtime provider names.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _ort() -> Any:
    import onnxruntime as ort  # imported here so that `onnxedge --help` stays fast

    _check_one_build()
    return ort


@functools.cache
def _check_one_build() -> None:
    """Once per process: not both onnxruntime and onnxruntime-gpu installed (`deps`)."""
    from onnxedge.runtime.deps import check_one_onnxruntime

    check_one_onnxruntime()


_PRELOAD_LOCK = threading.Lock()
_preloaded = False


def preload_gpu_libraries() -> None:
    """Before the first GPU session: `onnxruntime.preload_dlls()` (onnxruntime 1.21+) loads the CUDA
    and cuDNN libraries that pip installed (``pip install 'onnxedge[cuda]'``), so that a machine
    with only an NVIDIA driver gets the CUDA EP. Once per process, and never fatal: where the
    function is missing nothing happens, what it prints (on stdout, where a command's results go)
    and any exception go to the debug log; a provider that still cannot load is reported by
    `make_session`."""
    global _preloaded
    with _PRELOAD_LOCK:
        if _preloaded:
            return
        _preloaded = True
        preload = getattr(_ort(), "preload_dlls", None)
        if preload is None:
            return
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
                preload()
        except Exception:
            log.debug("onnxruntime.preload_dlls() failed", exc_info=True)
        for line in said.getvalue().splitlines():
            if line.strip():
                log.debug("onnxruntime.preload_dlls: %s", _ANSI.sub("", line))


def provider_name(short: str) -> str:
    key = short.strip().lower()
    if key in PROVIDERS:
        return PROVIDERS[key]
    if short in PROVIDERS.values():
        return short
    raise OnnxEdgeError(
        f"unknown execution provider {short!r}; expected one of: {', '.join(PROVIDERS)}"
    )


def available_providers() -> list[str]:
    """The providers this onnxruntime build offers (offered is not the same as loadable)."""
    return list(_ort().get_available_providers())


# The most intra-op threads a session may be given: more is a typo (ONNX Runtime would start them
# all, and refuses anything above 2**31 - 1 with a TypeError).
MAX_THREADS = 1024


@dataclasses.dataclass(frozen=True)
class SessionConfig:
    provider: str = "cpu"
    threads: int | None = None  # intra-op threads; None lets ORT use one per physical core
    graph_optimization: str = "all"  # disable | basic | extended | all
    provider_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # SessionOptions.add_session_config_entry, e.g. {"session.intra_op.allow_spinning": "0"}
    config_entries: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.threads
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= MAX_THREADS
        ):
            raise ValueError(f"expected threads from 1 to {MAX_THREADS} or None, got {t!r}")


_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def make_session(model: str | Path | bytes, config: SessionConfig | None = None) -> Any:
    """An `onnxruntime.InferenceSession` on exactly the requested provider.

    ONNX Runtime falls back to the CPU EP silently when a provider fails to load; here that is an
    error naming what was requested and what is available, so a "CUDA" result is never a CPU one.
    """
    config = config or SessionConfig()
    ort = _ort()
    name = provider_name(config.provider)
    offered = ort.get_available_providers()
    if name not in offered:
        raise ProviderUnavailable(f"requested {name}, available: {', '.join(offered)}")
    if name != "CPUExecutionProvider":
        preload_gpu_libraries()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if config.threads is not None:
        options.intra_op_num_threads = config.threads
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _OPT_LEVELS[config.graph_optimization]
    )
    for key, value in config.config_entries.items():
        options.add_session_config_entry(key, str(value))
    providers: list[Any] = (
        [(name, dict(config.provider_options))] if config.provider_options else [name]
    )
    if name != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")  # for the few nodes a GPU EP leaves to the CPU
    source = str(model) if isinstance(model, Path) else model
    # A GPU provider that fails to load says why only in onnxruntime's log on stderr: capture it
    # so that the reason lands in the one-line error instead of above it.
    capture = captured_native_stderr() if name != "CPUExecutionProvider" else _no_capture()
    session, error = None, None
    # onnxruntime's Python layer prints an "EP Error" banner on stdout when a GPU provider fails
    # and it falls back: stdout holds the commands' results, so it goes to the debug log.
    printed = io.StringIO()
    with capture as ort_log, contextlib.redirect_stdout(printed):
        try:
            session = ort.InferenceSession(source, sess_options=options, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            error = f"onnxruntime cannot load the model on {name}: {first_line(e)}"
    for line in printed.getvalue().splitlines():
        if line.strip():
            log.debug("onnxruntime printed: %s", line)
    for line in ort_log:
        log.debug("onnxruntime: %s", line)
    said = ort_complaint(ort_log)
    suffix = f"; onnxruntime says: {said}" if said else ""
    if session is None:
        raise OnnxEdgeError(f"{error}{suffix}")
    if session.get_providers()[0] != name:
        # Offered by the build is not loadable: the CUDA EP is offered by onnxruntime-gpu
        # whether or not CUDA and cuDNN can be found.
        usable = ", ".join(session.get_providers())
        raise ProviderUnavailable(
            f"requested {name}, but onnxruntime could not load it and fell back; available: "
            f"{usable} (this build offers: {', '.join(offered)}){suffix}"
        )
    return session


# --- onnxruntime's log ------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ORT_LINE = re.compile(r"\[[EW]:onnxruntime:[^\]]*\]\s*(.*)")
_LIBRARY_PATH = re.compile(r"(?<!\S)/\S*/([^/\s]+\.so[.\d]*)")


# fd 2 is process-wide: one capture at a time, or a second one would save the first's temporary
# file as "stderr" and restore it, losing the real one.
_CAPTURE_LOCK = threading.Lock()


@contextlib.contextmanager
def captured_native_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 inside the block (onnxruntime logs
    there); lines that are not onnxruntime's are passed on to stderr afterwards.

    Captures are serialised by a lock; while one is open, what other threads write to fd 2 is
    held back until it ends.
    """
    with _CAPTURE_LOCK, _capture_fd2() as lines:
        yield lines


@contextlib.contextmanager
def _capture_fd2() -> Iterator[list[str]]:
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield lines  # no usable fd 2: nothing to capture
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = _ANSI.sub("", tmp.read().decode("utf-8", errors="replace"))
    for line in text.splitlines():
        if ":onnxruntime:" in line:
            lines.append(line)
        elif line.strip():
            print(line, file=sys.stderr)


def ort_complaint(lines: Sequence[str]) -> str:
    """onnxruntime's own words for why a provider did not load, on one line."""
    said: list[str] = []
    for line in lines:
        match = _ORT_LINE.search(_ANSI.sub("", line))
        if not match:
            continue
        message = match.group(1).strip()
        if " : FAIL : " in message:
            message = message.rsplit(" : FAIL : ", 1)[1]
        message = message.split(" Please install", 1)[0].strip()
        message = _LIBRARY_PATH.sub(r"\1", message)
        if message and message not in said:
            said.append(message)
    return "; ".join(said)


@contextlib.contextmanager
def _no_capture() -> Iterator[list[str]]:
    yield []


_MISSING_LIBRARY = re.compile(r"([^\s:;/]+\.so[.\d]*): cannot open shared object file")
_EP_NAMES = {"Tensorrt": "TensorRT"}
SHORT_REASON_CHARS = 120


def short_reason(message: str) -> str:
    """The first cause in a provider's (or engine's) failure message, for one SKIPPED line:
    ``CUDA EP: libcublasLt.so.13 not found`` for `make_session`'s long message with onnxruntime's
    own words; the message itself, cut at its first sentence, for anything else. The full message
    stays in the JSON reports and is printed with ``-v``."""
    requested = re.match(r"requested (\w+?)ExecutionProvider\b", message)
    ep = ""
    if requested:
        ep = f"{_EP_NAMES.get(requested.group(1), requested.group(1))} EP"
    said = message.partition("onnxruntime says: ")[2]
    library = _MISSING_LIBRARY.search(said or message)
    if library:
        cause = f"{library.group(1)} not found"
    elif said:
        cause = said.split("; ")[0].strip()
    elif requested and "could not load it" in message:
        cause = "onnxruntime could not load it and fell back to the CPU"
    elif requested and ", available: " in message:
        cause = "not in this onnxruntime build (available: "
        cause += message.partition(", available: ")[2].split(";")[0] + ")"
    else:
        cause = re.split(r"(?<=\.)\s+(?=[A-Z])", message.strip(), maxsplit=1)[0]
    if len(cause) > SHORT_REASON_CHARS:
        cause = cause[: SHORT_REASON_CHARS - 1].rstrip() + "…"
    return f"{ep}: {cause}" if ep else cause
