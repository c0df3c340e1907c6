"""Inference engines: ONNX Runtime (always installed) and OpenVINO (``onnxedge[openvino]``).

One room per engine, as Polygraphy's ``backend/<engine>/``: `base` (the `Session` protocol every
engine's runner follows, which ``onnxruntime.InferenceSession`` satisfies unwrapped), ONNX
Runtime's loader is `onnxedge.runtime.engines.onnxruntime.session.make_session`, OpenVINO's is
`openvino.loader` with
its runner in `openvino.runner`. `open_session` picks one by name.

An engine that cannot run here raises `EngineUnavailable` (a `ProviderUnavailable`), which
parity and bench report as SKIPPED with the reason, never as passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxedge.runtime.engines.base import (
    ENGINES,
    ONNXRUNTIME,
    OPENVINO,
    EngineUnavailable,
    PortInfo,
    Session,
    check_engine,
)
from onnxedge.runtime.engines.openvino.loader import DEFAULT_PRECISION, PRECISIONS, OpenVinoConfig
from onnxedge.runtime.errors import OnnxEdgeError


def engine_unavailable_reason(engine: str, precision: str = DEFAULT_PRECISION) -> str | None:
    """Why ``engine`` cannot run here (at ``precision``, for OpenVINO), or None where it can."""
    if check_engine(engine) == ONNXRUNTIME:
        return None
    from onnxedge.runtime.engines.openvino.loader import unavailable_reason

    return unavailable_reason(OpenVinoConfig(precision=precision))


def installed_engines() -> tuple[str, ...]:
    """The engines that can run here, in `ENGINES` order: the default of ``bench --engines``."""
    return tuple(e for e in ENGINES if engine_unavailable_reason(e) is None)


def check_precision(engine: str, precision: str) -> str:
    """``precision`` for ``engine``: OpenVINO takes one of `PRECISIONS`; ONNX Runtime runs the
    model as stored, so anything but the default is a usage error there."""
    engine = check_engine(engine)
    OpenVinoConfig(precision=precision)  # validates the name: a typo is not "an OpenVINO setting"
    if engine == ONNXRUNTIME and precision != DEFAULT_PRECISION:
        raise OnnxEdgeError(
            f"precision {precision!r} is an OpenVINO setting; onnxruntime runs the model at the "
            "precision it is stored in (choose the engine openvino, or a variant of the bundle)"
        )
    return precision


def open_session(
    engine: str,
    model: Path | bytes,
    *,
    provider: str = "cpu",
    threads: int | None = None,
    precision: str = DEFAULT_PRECISION,
    extra_outputs: Sequence[str] = (),
) -> Session:
    """A session for ``model`` (a path `Bundle.open` verified, or the verified bytes of
    `Bundle.model_bytes`) on ``engine``.

    ONNX Runtime: `make_session` on ``provider`` (``extra_outputs`` is not supported there:
    parity gives ONNX Runtime a copy of the graph instead). OpenVINO: the CPU only, compiled
    with ``precision``, ``threads`` and the LATENCY hint (`OpenVinoConfig`).
    """
    engine = check_engine(engine)
    check_precision(engine, precision)
    if engine == ONNXRUNTIME:
        if extra_outputs:
            raise ValueError("extra_outputs is for the openvino engine")
        from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session

        return make_session(model, SessionConfig(provider=provider, threads=threads))
    if provider not in ("cpu", "auto"):
        raise OnnxEdgeError(
            f"the openvino engine runs on the CPU; provider {provider!r} is for onnxruntime"
        )
    from onnxedge.runtime.engines.openvino import open_openvino

    config = OpenVinoConfig(precision=precision, threads=threads)
    return open_openvino(model, config, extra_outputs=extra_outputs)


__all__ = [
    "DEFAULT_PRECISION",
    "ENGINES",
    "ONNXRUNTIME",
    "OPENVINO",
    "PRECISIONS",
    "EngineUnavailable",
    "OpenVinoConfig",
    "PortInfo",
    "Session",
    "check_engine",
    "check_precision",
    "engine_unavailable_reason",
    "installed_engines",
    "open_session",
]
