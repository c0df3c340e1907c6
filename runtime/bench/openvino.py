"""The OpenVINO engines of the benchmark: the bundle's fp32 model (``model.onnx``) at each
requested inference precision, and its int8 QDQ variant where the bundle has one, each compiled
as `onnxedge.runtime.engines.openvino` describes and timed end to end (host arrays in, host arrays
out), as ONNX Runtime's CPU EP is.

1. Rows: engine ``openvino``, family ``openvino``, device ``cpu``, mode end-to-end; ``variant``
   empty for fp32 at f32 (the same numbers as ONNX Runtime), ``bf16`` for fp32 compiled at bf16,
   ``int8`` for the int8 variant (compiled at f32: its quantised convolutions run in int8, the
   rest in f32).
2. Settings: what OpenVINO reports the compiled model runs with (precision, hint, threads,
   streams), not only what was asked.
3. OpenVINO not installed, or unable to run here: one skipped engine with the reason (not one per
   variant); a precision the CPU lacks: that engine skipped.
4. Timed call: one infer request per engine, reused; the input is shared with OpenVINO (ONNX
   Runtime's CPU EP reads numpy memory in place too), the output copied out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bench.engines import E2E, AnyEngine, EngineInfo, Runner, SkippedEngine
from onnxedge.runtime.engines import OPENVINO, OpenVinoConfig
from onnxedge.runtime.engines.openvino import OpenVinoSession, open_openvino, unavailable_reason
from onnxedge.runtime.errors import OnnxEdgeError

FP32, INT8 = "fp32", "int8"
# The output check's atol (against ONNX Runtime's fp32 output) for an engine computing in fewer
# bits: int8 and bf16 move probabilities by up to ~1e-3 on this model (docs/BENCHMARKS.md), far
# beyond fp32's 1e-4, while a broken engine is off by far more.
LOW_PRECISION_ATOL = 1e-2


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

    def __init__(self, info: EngineInfo, session: OpenVinoSession) -> None:
        self.info = info
        self._session: OpenVinoSession | None = session
        self.check_atol = LOW_PRECISION_ATOL if info.variant else None

    def prepare(self, x: np.ndarray) -> Runner:
        if self._session is None:
            raise OnnxEdgeError(f"{self.info.label} was closed")
        return _OpenVinoRunner(self._session, x)

    def close(self) -> None:
        self._session = None


def bundle_models(bundle: Any) -> dict[str, Path]:
    """``fp32`` (``model.onnx``) and, where the bundle's manifest lists one (issue 11's
    ``variants``), the ``int8`` variant's file, verified by `Bundle.variant_model`."""
    models = {FP32: bundle.model_path}
    if INT8 in (getattr(bundle, "variants", None) or {}):
        models[INT8] = bundle.variant_model(INT8)
    return models


def _info(variant: str, precision: str, threads: int, model: Path) -> EngineInfo:
    tag = INT8 if variant == INT8 else ("" if precision == "f32" else precision)
    return EngineInfo(
        OPENVINO,
        OPENVINO,
        "cpu",
        E2E,
        "OpenVINO CPU",
        {"model": model.name, "inference_precision": precision, "inference_num_threads": threads},
        variant=tag,
    )


def openvino_engines(
    models: Mapping[str, Path], precisions: Sequence[str], *, threads: int
) -> list[AnyEngine]:
    """The OpenVINO engines (module docstring): ``models`` maps ``fp32`` (``model.onnx``) and,
    where the bundle has it, ``int8`` to files `Bundle.open` verified; ``precisions`` are the
    inference precisions of the fp32 model."""
    wanted = [(v, p) for v in models for p in (precisions if v == FP32 else ("f32",))]
    if not wanted:
        return []
    missing = unavailable_reason()
    if missing:  # 3.
        variant, precision = wanted[0]
        return [SkippedEngine(_info(variant, precision, threads, models[variant]), missing)]
    engines: list[AnyEngine] = []
    for variant, precision in wanted:
        info = _info(variant, precision, threads, models[variant])
        try:
            session = open_openvino(
                models[variant], OpenVinoConfig(precision=precision, threads=threads)
            )
        except OnnxEdgeError as e:
            engines.append(SkippedEngine(info, str(e)))
            continue
        settings = {
            "model": models[variant].name,
            **session.settings,  # 2.
            "io": "input shared with OpenVINO, output copied (share_inputs=True)",
        }
        engines.append(OpenVinoEngine(dataclasses.replace(info, settings=settings), session))
    return engines


__all__ = ["LOW_PRECISION_ATOL", "OpenVinoEngine", "bundle_models", "openvino_engines"]
