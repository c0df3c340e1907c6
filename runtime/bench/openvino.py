"""The OpenVINO engines of the benchmark: each of the run's models (`models.bench_models`) made
for the CPU, the fp32 model at each requested inference precision, compiled as
`onnxedge.runtime.engines.openvino` describes and timed end to end (host arrays in, host arrays
out), as ONNX Runtime's CPU EP is.

1. Rows: engine ``openvino``, family ``openvino``, device ``cpu``, mode end-to-end; ``variant``
   the bundle's model (``fp32``, ``int8``: the same QDQ file ONNX Runtime runs, compiled at f32:
   its quantised convolutions run in int8, the rest in f32); ``precision`` ``bf16`` for the fp32
   model compiled at bf16, empty otherwise.
2. Settings: what OpenVINO reports the compiled model runs with (precision, hint, threads,
   streams), not only what was asked.
3. OpenVINO not installed, or unable to run here: one skipped engine with the reason (not one per
   model); a precision the CPU lacks: that engine skipped; a model OpenVINO cannot read (the ORT
   format) or not made for the CPU (fp16): that model's row skipped with the reason.
4. Timed call: one infer request per engine, reused; the input is shared with OpenVINO (ONNX
   Runtime's CPU EP reads numpy memory in place too), the output copied out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxedge.runtime.bench.engines import E2E, AnyEngine, EngineInfo, Runner, SkippedEngine
from onnxedge.runtime.bench.models import LOW_PRECISION_ATOL, BenchModel
from onnxedge.runtime.engines import OPENVINO, OpenVinoConfig
from onnxedge.runtime.engines.openvino import OpenVinoSession, open_openvino, unavailable_reason
from onnxedge.runtime.errors import OnnxEdgeError

F32 = "f32"


class _OpenVinoRunner:
    """4.: one request, the input shared, the output copied."""

    def __init__(self, session: OpenVinoSession, x: np.ndarray) -> None:
        self._request = session.request()
        self._feeds = session.check_feeds({session.get_inputs()[0].name: x})
        self._port = session.compiled.model.outputs[0]
        self._last: Any = None
        self.extras: Mapping[str, Any] = {}

    def run(self) -> None:
        self._last = self._request.infer(self._feeds, share_inputs=True, share_outputs=False)

    def output(self) -> np.ndarray:
        if self._last is None:
            self.run()
        return np.asarray(self._last[self._port])

    def close(self) -> None:
        self._last = None


class OpenVinoEngine:
    """An OpenVINO compiled model as a benchmark engine."""

    def __init__(
        self,
        info: EngineInfo,
        session: OpenVinoSession,
        check_atol: float | None = None,
        reference_key: str = "fp32",
    ) -> None:
        self.info = info
        self._session: OpenVinoSession | None = session
        self.check_atol = check_atol
        self.reference_key = reference_key  # the numerics its output is checked against

    def prepare(self, x: np.ndarray) -> Runner:
        if self._session is None:
            raise OnnxEdgeError(f"{self.info.label} was closed")
        return _OpenVinoRunner(self._session, x)

    def close(self) -> None:
        self._session = None


def _info(model: BenchModel, precision: str, threads: int) -> EngineInfo:
    return EngineInfo(
        OPENVINO,
        OPENVINO,
        "cpu",
        E2E,
        "OpenVINO CPU",
        {
            "model": model.path.name,
            "inference_precision": precision,
            "inference_num_threads": threads,
        },
        variant=model.variant,
        precision="" if precision == F32 else precision,
    )


def openvino_engines(
    models: Sequence[BenchModel], precisions: Sequence[str], *, threads: int
) -> list[AnyEngine]:
    """The OpenVINO engines (module docstring): each model the bundle verified
    (`models.bench_models`), the fp32 one at each of ``precisions``, the others at f32."""
    wanted = [
        (m, p)
        for m in models
        for p in (precisions if (m.precision, m.format) == ("fp32", "onnx") else (F32,))
    ]
    if not wanted:
        return []
    missing = unavailable_reason()
    if missing:  # 3.
        model, precision = wanted[0]
        return [SkippedEngine(_info(model, precision, threads), missing)]
    engines: list[AnyEngine] = []
    for model, precision in wanted:
        info = _info(model, precision, threads)
        if model.format != "onnx":  # 3.
            reason = f"OpenVINO reads ONNX files, not the {model.format.upper()} format"
            engines.append(SkippedEngine(info, reason))
            continue
        if not model.made_for("cpu"):
            engines.append(SkippedEngine(info, model.not_made_for("OpenVINO's CPU plugin")))
            continue
        try:
            session = open_openvino(
                model.path, OpenVinoConfig(precision=precision, threads=threads)
            )
        except OnnxEdgeError as e:
            engines.append(SkippedEngine(info, str(e)))
            continue
        settings = {
            "model": model.path.name,
            **session.settings,  # 2.
            "io": "input shared with OpenVINO, output copied (share_inputs=True)",
        }
        atol = LOW_PRECISION_ATOL if precision != F32 else model.check_atol
        engines.append(
            OpenVinoEngine(
                dataclasses.replace(info, settings=settings), session, atol, model.reference_key
            )
        )
    return engines


__all__ = ["LOW_PRECISION_ATOL", "OpenVinoEngine", "openvino_engines"]
