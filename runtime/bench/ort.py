"""The ONNX Runtime engines: one per execution provider and mode, each with its session options
on purpose (`ort_engines`), host arrays in and out or IO binding on the device."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bench.engines import (
    E2E,
    GRAPH,
    ORT,
    PROVIDER_DEVICE,
    RESIDENT,
    AnyEngine,
    Engine,
    EngineInfo,
    Runner,
    SkippedEngine,
    ort_engine_name,
)
from onnxedge.runtime.bench.models import BenchModel, fp32_model
from onnxedge.runtime.engines.onnxruntime.session import (
    PROVIDERS,
    SessionConfig,
    make_session,
    provider_name,
)
from onnxedge.runtime.errors import OnnxEdgeError

_NP_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class _OrtHostRunner:
    """ORT with host arrays in and out: `session.run` copies inputs and outputs itself."""

    def __init__(self, session: Any, x: np.ndarray) -> None:
        self._session = session
        self._feeds = {session.get_inputs()[0].name: x}
        self._last: list[Any] | None = None
        self.extras: Mapping[str, Any] = {}

    def run(self) -> None:
        self._last = self._session.run(None, self._feeds)

    def output(self) -> np.ndarray:
        if self._last is None:
            self.run()
        assert self._last is not None
        return np.asarray(self._last[0])

    def close(self) -> None:
        self._last = None


class _OrtBoundRunner:
    """ORT with IO binding: the input is copied to the device once, outside the timing, and the
    outputs are preallocated there, so a timed call moves no data between host and device.

    The output shapes come from the graph (the symbolic batch dim set to the batch size), not from
    a trial run: with a CUDA graph the first run is the capture, and it must see the bound buffers.
    """

    def __init__(self, session: Any, x: np.ndarray, device: str, *, own_session: bool) -> None:
        import onnxruntime as ort

        self._session = session
        self._own = own_session
        device_id = 0
        self._input = ort.OrtValue.ortvalue_from_numpy(x, device, device_id)
        self._binding = session.io_binding()
        self._binding.bind_ortvalue_input(session.get_inputs()[0].name, self._input)
        self._outputs = []
        for out in session.get_outputs():
            shape = _static_shape(out.shape, x.shape[0], out.name)
            dtype = _NP_DTYPES.get(out.type)
            if dtype is None:
                raise OnnxEdgeError(f"output {out.name!r}: unsupported type {out.type}")
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, device, device_id)
            self._binding.bind_ortvalue_output(out.name, value)
            self._outputs.append(value)
        self.extras: Mapping[str, Any] = {}

    def run(self) -> None:
        self._session.run_with_iobinding(self._binding)
        self._binding.synchronize_outputs()

    def output(self) -> np.ndarray:
        return np.asarray(self._binding.copy_outputs_to_cpu()[0])

    def close(self) -> None:
        self._binding.clear_binding_inputs()
        self._binding.clear_binding_outputs()
        self._outputs.clear()
        if self._own:
            self._session = None


def _static_shape(shape: Sequence[Any], batch: int, name: str) -> list[int]:
    dims = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d >= 0:
            dims.append(d)
        elif i == 0:
            dims.append(batch)
        else:
            raise OnnxEdgeError(
                f"output {name!r} has a symbolic dim {d!r} other than the batch dim; "
                "IO binding needs its shape before the run"
            )
    return dims


class OrtEngine:
    """An ONNX Runtime engine: one session per engine, or one per batch size for a CUDA graph
    (a graph is captured for fixed shapes and fixed buffers)."""

    def __init__(
        self,
        info: EngineInfo,
        model: Path,
        config: SessionConfig,
        *,
        session: Any = None,
        per_batch_session: bool = False,
        min_warmup: int = 0,
        check_atol: float | None = None,
        reference_key: str = "fp32",
    ) -> None:
        self.info = info
        self._model = model
        self._config = config
        self._per_batch = per_batch_session
        self.min_warmup = min_warmup
        self.check_atol = check_atol  # a model in fewer bits than fp32 states its own
        self.reference_key = reference_key  # the numerics its output is checked against
        self._session = None
        if not per_batch_session:
            self._session = session if session is not None else make_session(model, config)

    def prepare(self, x: np.ndarray) -> Runner:
        session = make_session(self._model, self._config) if self._per_batch else self._session
        if self.info.mode == E2E:
            return _OrtHostRunner(session, x)
        device = "cpu" if self.info.device == "cpu" else "cuda"
        return _OrtBoundRunner(session, x, device, own_session=self._per_batch)

    def close(self) -> None:
        self._session = None


def ort_engines(
    model: Path | BenchModel,
    providers: Sequence[str],
    *,
    threads: int,
    tf32: bool,
    spinning: bool = True,
) -> list[AnyEngine]:
    """The ORT engines of ``model`` (a `BenchModel`, or a file taken as fp32) for the requested
    providers, each with its session options on purpose:

    - CPU EP: ``intra_op_num_threads`` = ``threads``, ``ORT_ENABLE_ALL`` (with the NCHWc layout
      transform for AVX2/AVX-512 convs), intra-op spinning as ORT's default (on).
    - CUDA EP: end-to-end (host arrays), device-resident (IO binding) and a CUDA graph (IO
      binding, one session per batch size); ``cudnn_conv_algo_search=EXHAUSTIVE`` (shapes are
      fixed per session and the search runs in the warm-up), TF32 off unless ``tf32``.
    - TensorRT EP: end-to-end only.
    A provider that cannot load becomes `SkippedEngine` rows with ONNX Runtime's reason; so does a
    provider the model is not made for (the fp16 variant on the CPU EP, the int8 one on CUDA).
    """
    bench = model if isinstance(model, BenchModel) else fp32_model(Path(model))
    model, atol, variant = bench.path, bench.check_atol, bench.variant
    engines: list[AnyEngine] = []

    def engine(info: EngineInfo, config: SessionConfig, **kw: Any) -> OrtEngine:
        return OrtEngine(
            info, model, config, check_atol=atol, reference_key=bench.reference_key, **kw
        )

    spin = "1" if spinning else "0"
    cpu_settings = {
        "model": model.name,
        "intra_op_num_threads": threads,
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "session.intra_op.allow_spinning": spin,
        "execution_mode": "ORT_SEQUENTIAL",
    }
    for short in dict.fromkeys(providers):
        name = provider_name(short)
        device = PROVIDER_DEVICE.get(name, "cuda")
        if name == "CPUExecutionProvider":
            config = SessionConfig(
                provider="cpu",
                threads=threads,
                graph_optimization="all",
                config_entries={"session.intra_op.allow_spinning": spin},
            )
            info = EngineInfo(
                ORT,
                ORT,
                "cpu",
                E2E,
                name,
                {**cpu_settings, "io_binding": False, "cuda_graph": False},
                variant=bench.variant,
            )
            engines.append(_try_engine(info, bench, lambda i=info, c=config: engine(i, c)))
        elif name == "CUDAExecutionProvider":
            options = {
                "device_id": "0",
                "cudnn_conv_algo_search": "EXHAUSTIVE",
                "use_tf32": "1" if tf32 else "0",
                "do_copy_in_default_stream": "1",
            }
            config = SessionConfig(
                provider="cuda", threads=threads, graph_optimization="all", provider_options=options
            )
            graph_config = dataclasses.replace(
                config, provider_options={**options, "enable_cuda_graph": "1"}
            )
            base = {
                "model": model.name,
                "graph_optimization_level": "ORT_ENABLE_ALL",
                "provider_options": options,
                "tf32": tf32,
            }

            def cuda_info(
                mode: str, device=device, name=name, base=base, **extra: Any
            ) -> EngineInfo:
                return EngineInfo(ORT, ORT, device, mode, name, {**base, **extra}, variant=variant)

            infos = {
                E2E: cuda_info(E2E, io_binding=False, cuda_graph=False),
                RESIDENT: cuda_info(RESIDENT, io_binding=True, cuda_graph=False),
                GRAPH: cuda_info(
                    GRAPH,
                    provider_options=graph_config.provider_options,
                    io_binding=True,
                    cuda_graph=True,
                    session="one per batch size (a graph is captured for fixed shapes)",
                ),
            }
            if not bench.made_for(short):
                reason = bench.not_made_for(name)
                engines.extend(SkippedEngine(i, reason) for i in infos.values())
                continue
            try:
                probe = make_session(model, config)
            except OnnxEdgeError as e:
                engines.extend(SkippedEngine(i, str(e)) for i in infos.values())
                continue
            engines.append(engine(infos[E2E], config, session=probe))
            engines.append(
                _try_engine(
                    infos[RESIDENT], bench, lambda i=infos[RESIDENT], c=config: engine(i, c)
                )
            )
            engines.append(engine(infos[GRAPH], graph_config, per_batch_session=True, min_warmup=2))
        else:
            config = SessionConfig(provider=short, threads=threads, graph_optimization="all")
            info = EngineInfo(
                ort_engine_name(short),
                ORT,
                device,
                E2E,
                name,
                {
                    "model": model.name,
                    "graph_optimization_level": "ORT_ENABLE_ALL",
                    "io_binding": False,
                },
                variant=variant,
            )
            engines.append(_try_engine(info, bench, lambda i=info, c=config: engine(i, c)))
    return engines


def _try_engine(info: EngineInfo, model: BenchModel, build: Callable[[], Engine]) -> AnyEngine:
    """``build()``, or a `SkippedEngine` where the model is not made for the provider or the
    provider cannot load it."""
    short = next((k for k, v in PROVIDERS.items() if v == info.provider), info.provider)
    if not model.made_for(short):
        return SkippedEngine(info, model.not_made_for(info.provider))
    try:
        return build()
    except OnnxEdgeError as e:
        return SkippedEngine(info, str(e))
