"""Compiling a model with OpenVINO: the settings on purpose (`OpenVinoConfig`), read back from the
compiled model so that what a report says is what ran.

Why these settings (measured figures: docs/BENCHMARKS.md):

1. ``INFERENCE_PRECISION_HINT`` is always set, ``f32`` by default. Left unset, OpenVINO's CPU
   plugin picks bf16 on any CPU with AVX-512 BF16 or AMX, so the "same model" computes other
   numbers than ONNX Runtime and PyTorch (parity would fail at fp32 tolerances). ``bf16`` only
   when asked; it is refused (`EngineUnavailable`) on a CPU that cannot run it rather than
   silently run in f32, and reported as bf16 everywhere.
2. ``INFERENCE_NUM_THREADS``: the count the caller gives (the same as ONNX Runtime's intra-op
   threads in a benchmark); None leaves OpenVINO's default (the cores of one socket).
3. ``PERFORMANCE_HINT=LATENCY``: one stream, every thread on one request, as ONNX Runtime runs a
   call. THROUGHPUT (several streams, requests in parallel) suits a server, not a device that
   classifies one batch at a time.
   Files to labels (`Classifier.predict_files`) runs several batches at once instead, on a
   second compile with ``streams``: ``NUM_STREAMS`` streams of one thread each, one batch in
   flight on each (on the 2-core Zen 3, int8 smile_cnn: 0.87 ms of CPU an image against 1.07
   with two threads on one request, docs/RUNTIME.md).
4. ``ENABLE_CPU_PINNING`` off (the LATENCY hint turns it on): ONNX Runtime's pool is not pinned
   either, and a pinned thread cannot move off a core another process is using, which on a
   shared machine cost OpenVINO up to 1.5x at batch 1 (docs/BENCHMARKS.md).

The model is read from the path `Bundle.open` verified (external data resolves beside it, as
ONNX Runtime loads it); ``extra_outputs`` exposes inner tensors (parity's pre-sigmoid logits)
without writing a modified copy.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxedge.runtime.deps import package_version
from onnxedge.runtime.engines.base import EngineUnavailable
from onnxedge.runtime.engines.onnxruntime.session import MAX_THREADS
from onnxedge.runtime.errors import OnnxEdgeError, first_line

log = logging.getLogger(__name__)

OPENVINO_EXTRA_HINT = "pip install 'onnxedge[openvino]'"
PRECISIONS = ("f32", "bf16")
DEFAULT_PRECISION = "f32"
HINTS = ("LATENCY", "THROUGHPUT")
DEVICE = "CPU"
# OpenVINO's CPU capability that bf16 inference needs (OPTIMIZATION_CAPABILITIES).
_CAPABILITY = {"f32": "FP32", "bf16": "BF16"}


@dataclasses.dataclass(frozen=True)
class OpenVinoConfig:
    """How a model is compiled: precision (``f32`` or ``bf16``), threads (None: OpenVINO's
    default), the performance hint, the device (only the CPU is supported), CPU pinning, and
    the streams (None: the hint's; OpenVINO gives at most one a core, read back as
    ``num_streams``)."""

    precision: str = DEFAULT_PRECISION
    threads: int | None = None
    hint: str = "LATENCY"
    device: str = DEVICE
    pinning: bool = False
    streams: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise OnnxEdgeError(
                f"unknown OpenVINO precision {self.precision!r}; expected one of: "
                f"{', '.join(PRECISIONS)}"
            )
        t = self.threads
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= MAX_THREADS
        ):
            raise ValueError(f"expected threads from 1 to {MAX_THREADS} or None, got {t!r}")
        n = self.streams
        if n is not None and (
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS
        ):
            raise ValueError(f"expected streams from 1 to {MAX_THREADS} or None, got {n!r}")
        if self.hint not in HINTS:
            raise OnnxEdgeError(
                f"unknown OpenVINO performance hint {self.hint!r}; expected one of: "
                f"{', '.join(HINTS)}"
            )
        if self.device != DEVICE:
            raise OnnxEdgeError(
                f"OpenVINO device {self.device!r} is not supported; expected {DEVICE}"
            )

    def properties(self) -> dict[str, Any]:
        """The properties `compile_model` passes to OpenVINO."""
        props: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": self.hint,
            "ENABLE_CPU_PINNING": self.pinning,
        }
        if self.threads is not None:
            props["INFERENCE_NUM_THREADS"] = self.threads
        if self.streams is not None:
            props["NUM_STREAMS"] = self.streams
        return props


def openvino_version() -> str | None:
    """The installed openvino package's version, or None; nothing is imported."""
    return package_version("openvino")


def import_openvino() -> Any:
    """The `openvino` module, or `EngineUnavailable` saying why it cannot be used here."""
    try:
        import openvino
    except ImportError:
        raise EngineUnavailable(
            f"the openvino engine is not installed here; install with: {OPENVINO_EXTRA_HINT}"
        ) from None
    except OSError as e:  # installed, but its native libraries do not load
        raise EngineUnavailable(
            f"openvino is installed but cannot be imported here: {first_line(e)}"
        ) from None
    return openvino


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    # One Core per process: it loads the device plugins once.
    return import_openvino().Core()


def capabilities(device: str = DEVICE) -> tuple[str, ...]:
    """What OpenVINO's plugin for ``device`` offers here (``FP32``, ``BF16``, ``INT8``, …)."""
    core = _core()
    if device not in core.available_devices:
        raise EngineUnavailable(
            f"OpenVINO has no {device} device here; available: "
            f"{', '.join(core.available_devices) or 'none'}"
        )
    return tuple(str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES"))


def unavailable_reason(config: OpenVinoConfig | None = None) -> str | None:
    """Why OpenVINO cannot run ``config`` here (package missing, no CPU device, a precision the
    CPU lacks), or None where it can."""
    config = config or OpenVinoConfig()
    try:
        offered = capabilities(config.device)
    except EngineUnavailable as e:
        return str(e)
    if _CAPABILITY[config.precision] not in offered:
        return (
            f"requested OpenVINO {config.precision} inference, which this CPU cannot run "
            f"(OpenVINO's {config.device} plugin offers: {', '.join(offered)})"
        )
    return None


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A compiled model and the settings OpenVINO reports it runs with."""

    model: Any  # openvino.CompiledModel
    config: OpenVinoConfig
    effective: dict[str, Any]
    # The names of the model's inputs and outputs as read, before compiling: a compiled port may
    # carry more than one (an input read straight by a Cast also takes the Cast's output name),
    # and its `get_any_name` is then another than the ONNX file's.
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()


def compile_model(
    model: Path | bytes, config: OpenVinoConfig | None = None, *, extra_outputs: Sequence[str] = ()
) -> Compiled:
    """Read the ONNX model ``model`` (a path `Bundle.open` verified, or the verified bytes of
    `Bundle.model_bytes`, external data inlined) and compile it.

    1. OpenVINO missing, broken, without a CPU device, or a precision the CPU lacks:
       `EngineUnavailable`.
    2. A model OpenVINO cannot read or compile, or an ``extra_outputs`` name it does not hold:
       `OnnxEdgeError` with OpenVINO's first line.
    3. The compiled model's precision, hint, threads and streams are read back; a precision
       other than the one requested is an error, never a silent fallback.
    """
    config = config or OpenVinoConfig()
    reason = unavailable_reason(config)  # 1.
    if reason:
        raise EngineUnavailable(reason)
    core = _core()
    source, model = (model, "the model") if isinstance(model, bytes) else (str(model), model)
    try:
        graph = core.read_model(source)
    except Exception as e:  # OpenVINO raises RuntimeError and its own types
        raise OnnxEdgeError(f"openvino cannot read {model}: {first_line(e)}") from None
    names = tuple(p.get_any_name() for p in graph.inputs)
    for name in extra_outputs:
        try:
            graph.add_outputs(name)
        except Exception as e:
            raise OnnxEdgeError(
                f"openvino: {model} has no tensor {name!r} to output: {first_line(e)}"
            ) from None
    try:
        compiled = core.compile_model(graph, config.device, config.properties())
    except Exception as e:
        raise OnnxEdgeError(
            f"openvino cannot compile {model} for {config.device}: {first_line(e)}"
        ) from None
    effective = _read_back(compiled)
    got = effective["inference_precision"]
    if got != config.precision:  # 3.
        raise OnnxEdgeError(
            f"asked OpenVINO for {config.precision} inference, it compiled {model} for {got}"
        )
    log.info("openvino compiled %s: %s", model, effective)
    outputs = tuple(p.get_any_name() for p in graph.outputs)
    return Compiled(compiled, config, effective, names, outputs)


# OpenVINO's element type names -> the names PRECISIONS uses.
_TYPE_NAMES = {"float32": "f32", "f32": "f32", "bfloat16": "bf16", "bf16": "bf16", "f16": "f16"}


def _read_back(compiled: Any) -> dict[str, Any]:
    def prop(key: str) -> Any:
        try:
            return compiled.get_property(key)
        except Exception:
            return None

    precision = prop("INFERENCE_PRECISION_HINT")
    type_name = getattr(precision, "type_name", None) or str(precision)
    return {
        "inference_precision": _TYPE_NAMES.get(type_name, type_name),
        "performance_hint": str(prop("PERFORMANCE_HINT")),
        "inference_num_threads": prop("INFERENCE_NUM_THREADS"),
        "num_streams": _plain(prop("NUM_STREAMS")),
        "cpu_pinning": prop("ENABLE_CPU_PINNING"),
        "device": DEVICE,
        "openvino": openvino_version(),
    }


def _plain(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)
