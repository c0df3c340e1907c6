"""`onnxedge bench`: latency and throughput of a bundle under ONNX Runtime, with PyTorch peers.

Users choose a deployment from these numbers, so every report states how they were made:

1. Inputs: one float32 array per batch size, uniform in [0, 1) from a fixed seed; every engine
   gets the same array (`make_input`).
2. Interleaving: batch sizes in order; at each batch size every engine is prepared and warmed up,
   its output is checked against the reference engine (ORT's CPU EP), and then the timed runs are
   split into rounds in which the engines take turns. Drift on a noisy machine (other jobs, clock
   changes) hits all engines alike, so the ratios hold. Each turn starts with one untimed run,
   which absorbs the previous engine's worker threads still spinning.
3. Clock: `time.perf_counter_ns` around each call. A call returns only when its outputs are ready:
   host arrays for the end-to-end modes, an explicit device synchronisation for the
   device-resident and CUDA-graph modes.
4. Statistics (`LatencyStats`): percentiles with numpy's ``linear`` method (``PERCENTILE_METHOD``);
   throughput = batch size / mean latency, i.e. images per second of back-to-back calls.
5. An engine whose output differs from the reference is not timed (status ``failed``); an engine
   that cannot run here is a ``skipped`` row with the reason, never a number.

This module never imports torch. The PyTorch peers live in `onnxedge.models.peers` and are
imported by name only where torch is importable (`peer_engines`).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from onnxedge.runtime.bundle import MODEL, Bundle, TensorSpec
from onnxedge.runtime.compare import compare_arrays
from onnxedge.runtime.deps import module_available, onnxruntime_version, package_version
from onnxedge.runtime.errors import OnnxEdgeError, first_line
from onnxedge.runtime.session import SessionConfig, available_providers, make_session, provider_name

log = logging.getLogger(__name__)

PERCENTILE_METHOD = "linear"  # numpy.percentile(method=...): interpolates between order statistics
THROUGHPUT_DEFINITION = "batch size / mean latency (images per second of back-to-back calls)"
DEFAULT_BATCH_SIZES = (1, 8, 64, 256)
DEFAULT_PROVIDERS = ("cpu", "cuda")

ORT = "onnxruntime"
PYTORCH = "pytorch"
E2E = "end-to-end"  # host arrays in, host arrays out
RESIDENT = "device-resident"  # inputs and outputs already on the device (IO binding)
GRAPH = "cuda-graph"  # device-resident, replayed as one captured CUDA graph

# --peers name -> engine name in the report.
PEERS = {
    "eager": "torch-eager",
    "channels-last": "torch-channels-last",
    "compile": "torch-compile",
}
# The peer mode an ORT mode is compared with.
_PEER_MODE = {E2E: E2E, RESIDENT: RESIDENT, GRAPH: RESIDENT}
_PROVIDER_DEVICE = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda",
}
_UNTIMED_PER_ROUND = 1
# A target is judged (met or missed) only from at least this many timed runs of each engine it
# compares; fewer give an "indicative" figure. Also the default of --min-iters.
MIN_RUNS_TO_JUDGE = 10
# A 1-minute load average before the run above this many per usable core marks the run as busy.
BUSY_LOAD_PER_CORE = 0.25


# --------------------------------------------------------------------------------------------
# Statistics


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Latency of one engine at one batch size, from the seconds each timed call took.

    Percentiles use numpy's ``linear`` method; throughput is ``batch_size / mean`` in images/s.
    ``warmup`` counts every untimed run: the warm-up and the one at the start of each round.
    """

    batch_size: int
    runs: int
    warmup: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput: float  # images/s

    @classmethod
    def from_seconds(
        cls, samples: Sequence[float], *, batch_size: int, warmup: int = 0
    ) -> LatencyStats:
        a = np.asarray(samples, dtype=np.float64)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"expected a non-empty list of latencies, found shape {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError("expected finite, non-negative latencies")
        if batch_size < 1:
            raise ValueError(f"expected a batch size >= 1, found {batch_size}")
        ms = a * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99], method=PERCENTILE_METHOD)
        mean = float(ms.mean())
        if mean <= 0:
            raise ValueError("expected a positive mean latency")
        return cls(
            batch_size=batch_size,
            runs=int(a.size),
            warmup=warmup,
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            mean_ms=mean,
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            throughput=batch_size / (mean / 1e3),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TimingPlan:
    """How many runs: a fixed count (``iters``) or a time budget per engine x batch (``seconds``,
    with at least ``min_iters`` runs), split into ``rounds`` in which the engines take turns."""

    warmup: int = 3
    iters: int | None = None
    seconds: float | None = 2.0
    min_iters: int = MIN_RUNS_TO_JUDGE
    rounds: int = 4
    max_iters: int = 100_000

    def __post_init__(self) -> None:
        if (self.iters is None) == (self.seconds is None):
            raise OnnxEdgeError("expected exactly one of --iters and --seconds")
        if self.iters is not None and self.iters < 1:
            raise OnnxEdgeError(f"expected --iters >= 1, found {self.iters}")
        if self.seconds is not None and not self.seconds > 0:
            raise OnnxEdgeError(f"expected --seconds > 0, found {self.seconds}")
        if self.warmup < 0:
            raise OnnxEdgeError(f"expected --warmup >= 0, found {self.warmup}")
        if self.rounds < 1 or self.min_iters < 1:
            raise OnnxEdgeError("expected --rounds and --min-iters >= 1")

    @property
    def effective_rounds(self) -> int:
        return min(self.rounds, self.iters) if self.iters is not None else self.rounds

    def quota(self, round_index: int) -> tuple[int, int, float | None]:
        """(min runs, max runs, time budget in s or None) for one engine's turn in a round."""
        n = self.effective_rounds
        if self.iters is not None:
            count = self.iters // n + (1 if round_index < self.iters % n else 0)
            return count, count, None
        assert self.seconds is not None
        return (
            math.ceil(self.min_iters / n),
            max(1, math.ceil(self.max_iters / n)),
            self.seconds / n,
        )

    def describe(self) -> str:
        if self.iters is not None:
            what = f"{self.iters} timed runs"
        else:
            what = f"{self.seconds:g} s of timed runs (at least {self.min_iters})"
        return (
            f"{self.warmup} warm-up runs, then {what} per engine x batch size, in "
            f"{self.effective_rounds} interleaved rounds, each starting with "
            f"{_UNTIMED_PER_ROUND} untimed run"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "description": self.describe()}


# --------------------------------------------------------------------------------------------
# Engines


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    """What an engine is: its name, device, mode and the settings it runs with."""

    engine: str  # "onnxruntime", "torch-eager", "torch-channels-last", "torch-compile", ...
    family: str  # ORT or PYTORCH
    device: str  # "cpu" or "cuda"
    mode: str  # E2E, RESIDENT or GRAPH
    provider: str  # the ORT execution provider, or the torch device
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.engine} {self.device} {self.mode}"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, **dataclasses.asdict(self)}


class Runner(Protocol):
    """One engine prepared for one input. `run` is the timed call; the rest is not timed."""

    extras: Mapping[str, Any]  # figures measured while preparing, e.g. {"compile_s": 12.3}

    def run(self) -> None: ...

    def output(self) -> np.ndarray: ...  # a host copy of the first output of the last run

    def close(self) -> None: ...


class Engine(Protocol):
    info: EngineInfo

    def prepare(self, x: np.ndarray) -> Runner: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class SkippedEngine:
    """An engine that cannot run here, and why."""

    info: EngineInfo
    reason: str

    def close(self) -> None:
        pass


AnyEngine = Engine | SkippedEngine


def peer_info(
    peer: str, device: str, mode: str, settings: Mapping[str, Any] | None = None
) -> EngineInfo:
    """The `EngineInfo` of a PyTorch peer (`peer` is a --peers name)."""
    return EngineInfo(
        engine=PEERS[peer],
        family=PYTORCH,
        device=device,
        mode=mode,
        provider=f"torch {device}",
        settings=dict(settings or {}),
    )


def peer_modes(device: str) -> tuple[str, ...]:
    """The modes a peer is timed in: end-to-end on the CPU; on a GPU also device-resident."""
    return (E2E,) if device == "cpu" else (E2E, RESIDENT)


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
    ) -> None:
        self.info = info
        self._model = model
        self._config = config
        self._per_batch = per_batch_session
        self.min_warmup = min_warmup
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
    model: Path, providers: Sequence[str], *, threads: int, tf32: bool, spinning: bool = True
) -> list[AnyEngine]:
    """The ORT engines for the requested providers, each with its session options on purpose:

    - CPU EP: ``intra_op_num_threads`` = ``threads``, ``ORT_ENABLE_ALL`` (with the NCHWc layout
      transform for AVX2/AVX-512 convs), intra-op spinning as ORT's default (on).
    - CUDA EP: end-to-end (host arrays), device-resident (IO binding) and a CUDA graph (IO
      binding, one session per batch size); ``cudnn_conv_algo_search=EXHAUSTIVE`` (shapes are
      fixed per session and the search runs in the warm-up), TF32 off unless ``tf32``.
    - TensorRT EP: end-to-end only.
    A provider that cannot load becomes `SkippedEngine` rows with ONNX Runtime's reason.
    """
    engines: list[AnyEngine] = []
    spin = "1" if spinning else "0"
    cpu_settings = {
        "intra_op_num_threads": threads,
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "session.intra_op.allow_spinning": spin,
        "execution_mode": "ORT_SEQUENTIAL",
    }
    for short in dict.fromkeys(providers):
        name = provider_name(short)
        device = _PROVIDER_DEVICE.get(name, "cuda")
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
            )
            engines.append(_try_engine(info, lambda i=info, c=config: OrtEngine(i, model, c)))
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
                "graph_optimization_level": "ORT_ENABLE_ALL",
                "provider_options": options,
                "tf32": tf32,
            }
            infos = {
                E2E: EngineInfo(
                    ORT, ORT, device, E2E, name, {**base, "io_binding": False, "cuda_graph": False}
                ),
                RESIDENT: EngineInfo(
                    ORT,
                    ORT,
                    device,
                    RESIDENT,
                    name,
                    {**base, "io_binding": True, "cuda_graph": False},
                ),
                GRAPH: EngineInfo(
                    ORT,
                    ORT,
                    device,
                    GRAPH,
                    name,
                    {
                        **base,
                        "provider_options": graph_config.provider_options,
                        "io_binding": True,
                        "cuda_graph": True,
                        "session": "one per batch size (a graph is captured for fixed shapes)",
                    },
                ),
            }
            try:
                probe = make_session(model, config)
            except OnnxEdgeError as e:
                engines.extend(SkippedEngine(i, str(e)) for i in infos.values())
                continue
            engines.append(OrtEngine(infos[E2E], model, config, session=probe))
            engines.append(
                _try_engine(
                    infos[RESIDENT],
                    lambda i=infos[RESIDENT], c=config: OrtEngine(i, model, c),
                )
            )
            engines.append(
                OrtEngine(infos[GRAPH], model, graph_config, per_batch_session=True, min_warmup=2)
            )
        else:
            config = SessionConfig(provider=short, threads=threads, graph_optimization="all")
            info = EngineInfo(
                f"{ORT}-{short.lower()}",
                ORT,
                device,
                E2E,
                name,
                {"graph_optimization_level": "ORT_ENABLE_ALL", "io_binding": False},
            )
            engines.append(_try_engine(info, lambda i=info, c=config: OrtEngine(i, model, c)))
    return engines


def _try_engine(info: EngineInfo, build: Callable[[], Engine]) -> AnyEngine:
    try:
        return build()
    except OnnxEdgeError as e:
        return SkippedEngine(info, str(e))


def peer_engines(
    manifest: Mapping[str, Any],
    peers: Sequence[str],
    devices: Sequence[str],
    *,
    threads: int,
    checkpoint: str | None = None,
    tf32: bool = False,
) -> list[AnyEngine]:
    """The PyTorch peers, from `onnxedge.models.peers` where torch is importable; elsewhere one
    `SkippedEngine` per peer x device x mode with the reason.

    Installed is not importable: a torch wheel whose native libraries are missing (a Jetson wheel
    without its CUDA libraries) raises OSError on import, so the import itself is guarded too.
    """
    if not peers:
        return []

    def skipped(reason: str) -> list[AnyEngine]:
        return [
            SkippedEngine(peer_info(p, d, m), reason)
            for d in devices
            for p in peers
            for m in peer_modes(d)
        ]

    if not module_available("torch"):
        return skipped(
            "torch is not installed here (the PyTorch peers need the export side: "
            "pip install 'onnxedge[export]')"
        )
    try:
        module = importlib.import_module("onnxedge.models.peers")
    except (ImportError, OSError) as e:
        log.debug("importing the PyTorch peers failed", exc_info=True)
        return skipped(
            f"torch is installed but cannot be imported here: {type(e).__name__}: {first_line(e)}"
        )
    return module.build_peers(
        manifest, peers=peers, devices=devices, threads=threads, checkpoint=checkpoint, tf32=tf32
    )


# --------------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    peers: tuple[str, ...] = tuple(PEERS)
    plan: TimingPlan = dataclasses.field(default_factory=TimingPlan)
    threads: int | None = None  # None: the physical cores this process may use
    seed: int = 0
    checkpoint: str | None = None
    tf32: bool = False
    spinning: bool = True
    atol: float = 1e-4  # output check against the reference engine (probabilities in [0, 1])
    rtol: float = 1e-3
    tf32_atol: float = 1e-2  # TF32 convolutions carry ~10 mantissa bits

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise OnnxEdgeError(f"expected batch sizes >= 1, found {list(self.batch_sizes)}")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise OnnxEdgeError(
                f"unknown peer {unknown[0]!r}; expected some of: {', '.join(PEERS)} (or none)"
            )
        for p in self.providers:
            provider_name(p)
        if self.threads is not None and self.threads < 1:
            raise OnnxEdgeError(f"expected --threads >= 1, found {self.threads}")
        if self.seed < 0:
            raise OnnxEdgeError(
                f"expected --seed >= 0 (numpy seeds are non-negative), found {self.seed}"
            )

    @property
    def resolved_threads(self) -> int:
        return self.threads if self.threads is not None else default_threads()

    @property
    def check_atol(self) -> float:
        """The output check's atol: looser where TF32 is allowed on the GPU."""
        return max(self.atol, self.tf32_atol) if self.tf32 else self.atol

    @property
    def devices(self) -> tuple[str, ...]:
        devs = (_PROVIDER_DEVICE.get(provider_name(p), "cuda") for p in self.providers)
        return tuple(dict.fromkeys(devs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "providers": [provider_name(p) for p in self.providers],
            "batch_sizes": list(self.batch_sizes),
            "peers": [PEERS[p] for p in self.peers],
            "timing": self.plan.to_dict(),
            "threads": self.resolved_threads,
            "threads_source": "--threads" if self.threads is not None else "physical cores",
            "thread_note": "ORT intra_op_num_threads and torch.set_num_threads get the same count",
            "seed": self.seed,
            "input": "float32, uniform in [0, 1), one array per batch size from the seed, "
            "the same for every engine",
            "tf32": self.tf32,
            "intra_op_spinning": self.spinning,
            "output_check": {
                "reference": "the first engine that runs at each batch size (ORT's CPU EP "
                "when cpu is among the providers)",
                "atol": self.check_atol,
                "rtol": self.rtol,
            },
            "percentile_method": f"numpy.percentile(method={PERCENTILE_METHOD!r})",
            "throughput": THROUGHPUT_DEFINITION,
            "clock": "time.perf_counter_ns around each call; device modes synchronise before "
            "returning",
        }


@dataclasses.dataclass(frozen=True)
class BenchRow:
    """One engine at one batch size: measured (``ok``), ``skipped`` with the reason, or
    ``failed`` (its output differed from the reference, or it raised while timed)."""

    info: EngineInfo
    batch_size: int
    status: str  # "ok" | "skipped" | "failed"
    reason: str = ""
    stats: LatencyStats | None = None
    check: str = ""
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        i = self.info
        return {
            "engine": i.engine,
            "family": i.family,
            "device": i.device,
            "mode": i.mode,
            "provider": i.provider,
            "label": i.label,
            "batch_size": self.batch_size,
            "status": self.status,
            "reason": self.reason,
            "check": self.check,
            **dict(self.extras),
            "stats": self.stats.to_dict() if self.stats else None,
        }


def make_input(shape: Sequence[int], batch: int, seed: int) -> np.ndarray:
    """The input every engine gets at this batch size: float32 uniform in [0, 1)."""
    rng = np.random.default_rng([seed, batch])
    return rng.random((batch, *shape), dtype=np.float32)


ProgressFn = Callable[[str, int, int], None]  # (description, done, total)


@dataclasses.dataclass
class _Active:
    engine: Engine
    runner: Runner
    untimed: int
    check: str
    samples: list[float] = dataclasses.field(default_factory=list)


def run_benchmark(
    engines: Sequence[AnyEngine],
    input_shape: Sequence[int],
    settings: BenchSettings,
    *,
    on_progress: ProgressFn | None = None,
) -> list[BenchRow]:
    """Time every engine at every batch size, interleaved as the module docstring says."""
    plan = settings.plan
    runnable = [e for e in engines if not isinstance(e, SkippedEngine)]
    per_engine = 1 + plan.effective_rounds
    total = len(runnable) * len(settings.batch_sizes) * per_engine
    done = 0

    def step(desc: str, n: int = 1) -> None:
        nonlocal done
        done += n
        if on_progress:
            on_progress(desc, done, total)

    rows: list[BenchRow] = []
    for batch in settings.batch_sizes:
        x = make_input(input_shape, batch, settings.seed)
        results: dict[int, BenchRow] = {}
        active: list[_Active] = []
        reference: np.ndarray | None = None
        reference_label = ""
        for engine in runnable:
            label = engine.info.label
            if on_progress:
                on_progress(f"batch {batch} · {label} · warm-up", done, total)
            runner: Runner | None = None
            warm = max(plan.warmup, getattr(engine, "min_warmup", 0))
            try:
                runner = engine.prepare(x)
                for _ in range(warm):
                    runner.run()
                out = runner.output()
            except Exception as e:  # an engine's failure must not stop the others
                log.debug("%s at batch %d", label, batch, exc_info=True)
                _close(runner)
                results[id(engine)] = BenchRow(
                    engine.info,
                    batch,
                    "skipped",
                    f"could not run at batch {batch}: {first_line(e)}",
                )
                step(label, per_engine)
                continue
            if reference is None:
                reference, reference_label, check = out, label, "reference"
            else:
                cmp = compare_arrays(out, reference, atol=settings.check_atol, rtol=settings.rtol)
                if not cmp:
                    detail = cmp.detail or f"max abs error {cmp.max_abs_error:.3g}"
                    _close(runner)
                    results[id(engine)] = BenchRow(
                        engine.info,
                        batch,
                        "failed",
                        f"output differs from {reference_label}: {detail} "
                        f"(atol {settings.check_atol:g}, rtol {settings.rtol:g}); not timed",
                        check=f"FAILED vs {reference_label}: {detail}",
                        extras=dict(runner.extras),
                    )
                    step(label, per_engine)
                    continue
                check = f"PASSED vs {reference_label}: max abs error {cmp.max_abs_error:.2g}"
            active.append(_Active(engine, runner, warm, check))
            step(f"batch {batch} · {label} · warm-up")

        for r in range(plan.effective_rounds):
            min_n, max_n, budget = plan.quota(r)
            for item in list(active):
                label = item.engine.info.label
                if on_progress:
                    on_progress(
                        f"batch {batch} · {label} · round {r + 1}/{plan.effective_rounds}",
                        done,
                        total,
                    )
                try:
                    for _ in range(_UNTIMED_PER_ROUND):
                        item.runner.run()
                    item.untimed += _UNTIMED_PER_ROUND
                    item.samples.extend(_time_calls(item.runner.run, min_n, max_n, budget))
                except Exception as e:
                    log.debug("%s at batch %d", label, batch, exc_info=True)
                    active.remove(item)
                    _close(item.runner)
                    results[id(item.engine)] = BenchRow(
                        item.engine.info,
                        batch,
                        "failed",
                        f"raised while timed at batch {batch}: {first_line(e)}",
                        check=item.check,
                    )
                    step(label, plan.effective_rounds - r)
                    continue
                step(label)

        for item in active:
            stats = LatencyStats.from_seconds(item.samples, batch_size=batch, warmup=item.untimed)
            results[id(item.engine)] = BenchRow(
                item.engine.info,
                batch,
                "ok",
                stats=stats,
                check=item.check,
                extras=dict(item.runner.extras),
            )
            _close(item.runner)
        for engine in engines:
            if isinstance(engine, SkippedEngine):
                rows.append(BenchRow(engine.info, batch, "skipped", engine.reason))
            else:
                rows.append(results[id(engine)])
    return rows


def _time_calls(
    fn: Callable[[], None], min_count: int, max_count: int, budget_s: float | None
) -> list[float]:
    """Seconds per call: at least ``min_count`` calls, then until ``budget_s`` has passed."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    deadline = None if budget_s is None else clock() + int(budget_s * 1e9)
    while len(samples) < max_count:
        t0 = clock()
        fn()
        t1 = clock()
        samples.append((t1 - t0) / 1e9)
        if len(samples) >= min_count and (deadline is None or t1 >= deadline):
            break
    return samples


def _close(runner: Runner | None) -> None:
    if runner is None:
        return
    try:
        runner.close()
    except Exception:
        log.debug("closing a runner failed", exc_info=True)


# --------------------------------------------------------------------------------------------
# Ratios and targets


@dataclasses.dataclass(frozen=True)
class Ratio:
    """ORT throughput / a PyTorch peer's throughput, same device, batch size and input."""

    batch_size: int
    ort: str
    peer: str
    ratio: float  # by throughput (batch / mean latency): what the targets use
    p50_ratio: float  # peer p50 / ORT p50: less sensitive to stalls from other jobs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compute_ratios(rows: Sequence[BenchRow]) -> list[Ratio]:
    """Every measured ORT row against every measured peer row of the same device and batch size,
    in the matching mode (end-to-end with end-to-end; device-resident and CUDA graph with the
    peer's device-resident)."""
    ratios = []
    for o in rows:
        if not o or o.info.family != ORT or o.stats is None:
            continue
        for p in rows:
            if (
                p
                and p.stats is not None
                and p.info.family == PYTORCH
                and p.batch_size == o.batch_size
                and p.info.device == o.info.device
                and p.info.mode == _PEER_MODE[o.info.mode]
            ):
                ratios.append(
                    Ratio(
                        o.batch_size,
                        o.info.label,
                        p.info.label,
                        o.stats.throughput / p.stats.throughput,
                        p.stats.p50_ms / o.stats.p50_ms,
                    )
                )
    return ratios


@dataclasses.dataclass(frozen=True)
class Target:
    """A figure the issue asks for: an ORT/peer throughput ratio (``peer`` set) at least
    ``required``, or an ORT p50 latency (``peer`` None) at most ``required`` ms."""

    name: str
    description: str
    device: str
    batch_size: int | None  # None: the largest batch size measured for both
    ort_mode: str
    required: float
    peer: str | None = None
    peer_mode: str = E2E


TARGETS = (
    Target(
        "cpu-b64-vs-eager",
        "CPU, fp32: ORT ≥ 3.5× PyTorch eager throughput at batch 64 (set for a 2-core CPU)",
        "cpu",
        64,
        E2E,
        3.5,
        "torch-eager",
    ),
    Target(
        "cpu-b1-vs-eager",
        "CPU, fp32: ORT ≥ 3× PyTorch eager throughput at batch 1 (set for a 2-core CPU)",
        "cpu",
        1,
        E2E,
        3.0,
        "torch-eager",
    ),
    Target(
        "cpu-b64-vs-compile",
        "CPU, fp32: ORT ≥ 1.5× torch.compile throughput at batch 64 (set for a 2-core CPU)",
        "cpu",
        64,
        E2E,
        1.5,
        "torch-compile",
    ),
    Target(
        "cuda-b1-p50-graph",
        "CUDA EP: batch-1 p50 ≤ 50 µs with IO binding and a CUDA graph (set for an H100)",
        "cuda",
        1,
        GRAPH,
        0.050,
    ),
    Target(
        "cuda-large-vs-eager",
        "CUDA EP: ORT ≥ 2× PyTorch eager throughput at the largest batch, both device-resident "
        "(set for an H100)",
        "cuda",
        None,
        RESIDENT,
        2.0,
        "torch-eager",
        RESIDENT,
    ),
)


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """A target's outcome: ``met``, ``missed`` (by how much), ``indicative`` (measured, but from
    fewer than `MIN_RUNS_TO_JUDGE` timed runs: a figure, not a verdict) or ``not measured`` (why).
    Truthy only when met."""

    name: str
    description: str
    status: str  # "met" | "missed" | "indicative" | "not measured"
    required: float
    unit: str  # "x" (ratio) or "ms" (p50 latency)
    measured: float | None
    batch_size: int | None
    detail: str

    def __bool__(self) -> bool:
        return self.status == "met"

    @property
    def missed_by(self) -> float | None:
        """How far off: required/measured for a ratio, measured/required for a latency."""
        if self.status != "missed" or self.measured is None:
            return None
        if self.unit == "x":
            return self.required / self.measured
        return self.measured / self.required

    def __str__(self) -> str:
        return f"{self.status.upper()} | {self.name} | {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "missed_by": self.missed_by}


def _find(rows: Sequence[BenchRow], engine: str, device: str, mode: str, batch: int):
    for r in rows:
        i = r.info
        if (i.engine, i.device, i.mode, r.batch_size) == (engine, device, mode, batch):
            return r
    return None


def evaluate_target(
    target: Target, rows: Sequence[BenchRow], *, min_runs: int = MIN_RUNS_TO_JUDGE
) -> TargetResult:
    """Judge ``target`` from the rows: met or missed only when every row it uses has at least
    ``min_runs`` timed runs; from fewer, the figure is reported as ``indicative``."""
    unit = "ms" if target.peer is None else "x"

    def result(status: str, detail: str, measured: float | None = None, batch=None):
        return TargetResult(
            target.name,
            target.description,
            status,
            target.required,
            unit,
            measured,
            batch,
            detail,
        )

    batch = target.batch_size
    if batch is None:
        common = {
            r.batch_size
            for r in rows
            if r
            and (r.info.engine, r.info.device, r.info.mode) == (ORT, target.device, target.ort_mode)
        }
        if target.peer is not None:
            common &= {
                r.batch_size
                for r in rows
                if r
                and (r.info.engine, r.info.device, r.info.mode)
                == (target.peer, target.device, target.peer_mode)
            }
        if not common:
            return result("not measured", _why_missing(rows, target, None))
        batch = max(common)
    ort_row = _find(rows, ORT, target.device, target.ort_mode, batch)
    if not ort_row or ort_row.stats is None:
        return result("not measured", _why_missing(rows, target, batch), batch=batch)
    if target.peer is None:
        p50 = ort_row.stats.p50_ms
        if ort_row.stats.runs < min_runs:
            return result(
                "indicative",
                f"{_too_few(ort_row.stats.runs, min_runs)}: p50 {p50 * 1e3:.1f} µs against ≤ "
                f"{target.required * 1e3:.0f} µs at batch {batch}",
                p50,
                batch,
            )
        if p50 <= target.required:
            return result(
                "met",
                f"p50 {p50 * 1e3:.1f} µs ≤ {target.required * 1e3:.0f} µs at batch {batch}",
                p50,
                batch,
            )
        return result(
            "missed",
            f"missed by {p50 / target.required:.2f}×: p50 {p50 * 1e3:.1f} µs, required ≤ "
            f"{target.required * 1e3:.0f} µs at batch {batch}",
            p50,
            batch,
        )
    peer_row = _find(rows, target.peer, target.device, target.peer_mode, batch)
    if not peer_row or peer_row.stats is None:
        return result("not measured", _why_missing(rows, target, batch), batch=batch)
    ratio = ort_row.stats.throughput / peer_row.stats.throughput
    figures = (
        f"ORT {ort_row.stats.throughput:,.0f} img/s, {target.peer} "
        f"{peer_row.stats.throughput:,.0f} img/s at batch {batch}"
    )
    runs = min(ort_row.stats.runs, peer_row.stats.runs)
    if runs < min_runs:
        return result(
            "indicative",
            f"{_too_few(runs, min_runs)}: {ratio:.2f}× against ≥ {target.required:g}× ({figures})",
            ratio,
            batch,
        )
    if ratio >= target.required:
        return result("met", f"{ratio:.2f}× ≥ {target.required:g}× ({figures})", ratio, batch)
    return result(
        "missed",
        f"missed by {target.required / ratio:.2f}×: {ratio:.2f}×, required ≥ "
        f"{target.required:g}× ({figures})",
        ratio,
        batch,
    )


def _too_few(runs: int, min_runs: int) -> str:
    return f"not enough runs to judge ({runs} < {min_runs})"


def _why_missing(rows: Sequence[BenchRow], target: Target, batch: int | None) -> str:
    wanted = [(ORT, target.ort_mode)]
    if target.peer is not None:
        wanted.append((target.peer, target.peer_mode))
    for engine, mode in wanted:
        label = f"{engine} {target.device} {mode}"
        candidates = [
            r
            for r in rows
            if (r.info.engine, r.info.device, r.info.mode) == (engine, target.device, mode)
            and (batch is None or r.batch_size == batch)
        ]
        if not candidates:
            where = f"at batch {batch}" if batch is not None else ""
            return f"no {label} row {where}".rstrip() + " in this run"
        bad = next((r for r in candidates if not r), None)
        if bad is not None:
            return f"{label} {bad.status}: {bad.reason}"
    return "not measured in this run"


def evaluate_targets(
    rows: Sequence[BenchRow],
    targets: Sequence[Target] = TARGETS,
    *,
    min_runs: int = MIN_RUNS_TO_JUDGE,
) -> list[TargetResult]:
    return [evaluate_target(t, rows, min_runs=min_runs) for t in targets]


# --------------------------------------------------------------------------------------------
# The machine


def _cpuinfo() -> tuple[str | None, int | None]:
    """CPU model name and the number of physical cores, from /proc/cpuinfo where it exists."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, None
    model = None
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        model = model or fields.get("model name")
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return model, len(cores) or None


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads() -> int:
    """One thread per physical core this process may use."""
    _, physical = _cpuinfo()
    usable = _usable_cpus()
    return max(1, min(physical or usable, usable))


def _gpus() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, where the OS has them."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    model, physical = _cpuinfo()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "physical_cores": physical,
        "logical_cores": os.cpu_count(),
        "usable_cores": _usable_cpus(),
        "gpus": _gpus(),
        "os": platform.platform(),
        "onnxruntime_providers": available_providers(),
    }


def versions() -> dict[str, str | None]:
    """Versions from the installed distributions' metadata (nothing is imported)."""
    return {
        "onnxedge": package_version("onnxedge"),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime_version(),
        "numpy": np.__version__,
        "onnx": package_version("onnx"),
        "torch": package_version("torch") if module_available("torch") else None,
    }


# --------------------------------------------------------------------------------------------
# The report


@dataclasses.dataclass(frozen=True)
class BenchReport:
    bundle: Mapping[str, Any]
    settings: BenchSettings
    machine: Mapping[str, Any]
    versions: Mapping[str, Any]
    date: str
    command: str
    engines: tuple[EngineInfo, ...]
    rows: tuple[BenchRow, ...]

    def __bool__(self) -> bool:
        return any(self.rows)

    @property
    def warnings(self) -> list[str]:
        """What makes these figures less trustworthy than they look."""
        out = []
        load = self.machine.get("load_average_before")
        cores = self.machine.get("usable_cores") or 1
        if load and load[0] > BUSY_LOAD_PER_CORE * cores:
            out.append(
                f"the machine was busy before the run (1-minute load {load[0]:g} on {cores} "
                "usable cores): other jobs took CPU time from the engines, not necessarily in "
                "equal shares, so these figures and ratios are not comparable with a run on a "
                "quiet machine (on the development machine, contention slowed PyTorch's OpenMP "
                "threads far more than ONNX Runtime's pool; see docs/BENCHMARKS.md)"
            )
        return out

    @property
    def ratios(self) -> list[Ratio]:
        return compute_ratios(self.rows)

    @property
    def targets(self) -> list[TargetResult]:
        return evaluate_targets(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": "onnxedge bench",
            "date": self.date,
            "warnings": self.warnings,
            "command": self.command,
            "bundle": dict(self.bundle),
            "machine": dict(self.machine),
            "versions": dict(self.versions),
            "settings": self.settings.to_dict(),
            "engines": [e.to_dict() for e in self.engines],
            "rows": [r.to_dict() for r in self.rows],
            "ratios": [r.to_dict() for r in self.ratios],
            "targets": [t.to_dict() for t in self.targets],
        }

    def to_markdown(self) -> str:
        return render_markdown(self)


def benchmark(
    bundle_path: str | Path,
    settings: BenchSettings | None = None,
    *,
    command: str = "",
    on_progress: ProgressFn | None = None,
) -> BenchReport:
    """Open the bundle, build the engines, time them, and return the report."""
    settings = settings or BenchSettings()
    bundle = Bundle.open(bundle_path)
    manifest = bundle.manifest
    shape = _sample_shape(bundle.input)
    threads = settings.resolved_threads
    load_before = load_average()
    engines: list[AnyEngine] = []
    try:
        engines += ort_engines(
            bundle.model_path,
            settings.providers,
            threads=threads,
            tf32=settings.tf32,
            spinning=settings.spinning,
        )
        engines += peer_engines(
            manifest,
            settings.peers,
            settings.devices,
            threads=threads,
            checkpoint=settings.checkpoint,
            tf32=settings.tf32,
        )
        rows = run_benchmark(engines, shape, settings, on_progress=on_progress)
    finally:
        for e in engines:
            e.close()
    return BenchReport(
        bundle={
            "path": str(bundle.path),
            "model": manifest.get("model"),
            "head": manifest.get("head"),
            "exporter": manifest.get("exporter"),
            "opset": manifest.get("opset"),
            "weights": manifest.get("weights"),
            "input": manifest.get("input"),
            "model_sha256": manifest.get("files", {}).get(MODEL, {}).get("sha256"),
        },
        settings=settings,
        machine={
            **machine_info(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        versions=versions(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command,
        engines=tuple(e.info for e in engines),
        rows=tuple(rows),
    )


def _sample_shape(spec: TensorSpec) -> tuple[int, ...]:
    """The shape of one sample of the bundle's input (`Bundle` has validated the spec): what
    `make_input` stacks batch-size times. Bench feeds float32 with every dim but the batch fixed."""
    if spec.dtype != "float32":
        raise OnnxEdgeError(
            f"bench times float32 inputs; the model's input {spec.name!r} is {spec.describe()}"
        )
    dims = spec.shape[1:]
    if not dims or any(isinstance(d, str) for d in dims):
        raise OnnxEdgeError(
            "bench needs the input's dims fixed except the batch dim (the first); the model's "
            f"input {spec.name!r} has shape {list(spec.shape)}"
        )
    return tuple(int(d) for d in dims)


# --------------------------------------------------------------------------------------------
# Markdown


def _ms(v: float) -> str:
    if v < 10:
        return f"{v:.3f}"
    if v < 100:
        return f"{v:.2f}"
    return f"{v:.1f}"


def _rate(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def render_markdown(report: BenchReport) -> str:
    b = report.bundle
    m = report.machine
    s = report.settings.to_dict()
    v = report.versions
    gpus = ", ".join(m.get("gpus") or []) or "none detected"
    lines = [
        f"# onnxedge bench: {b.get('model')} ({b.get('head')} head, {b.get('exporter')}, "
        f"opset {b.get('opset')})",
        "",
        *[f"> **Warning:** {w}.\n" for w in report.warnings],
        f"- Date: {report.date}",
        f"- Command: `{report.command}`" if report.command else "- Command: (library call)",
        f"- Machine: {m.get('cpu')}, {m.get('physical_cores')} physical cores "
        f"({m.get('logical_cores')} logical, {m.get('usable_cores')} usable); GPU: {gpus}",
        f"- Load average (1, 5, 15 min): {m.get('load_average_before')} before, "
        f"{m.get('load_average_after')} after (the load before counts other jobs sharing "
        "the CPU; the load after includes this run)",
        f"- Versions: onnxruntime {v.get('onnxruntime')}, torch {v.get('torch') or 'not installed'}"
        f", numpy {v.get('numpy')}, python {v.get('python')}",
        f"- Threads: {s['threads']} ({s['threads_source']}); {s['thread_note']}",
        f"- Timing: {s['timing']['description']}; batch sizes interleaved in order, every engine "
        "on the same input",
        f"- Statistics: percentiles by {s['percentile_method']}; throughput = {s['throughput']}",
        "",
        "## Latency and throughput",
        "",
        "| batch | engine | device | mode | p50 ms | p90 ms | p99 ms | mean ms | min ms "
        "| images/s | runs | warm-up* |",
        "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    measured = [r for r in report.rows if r.stats is not None]
    for r in sorted(measured, key=lambda r: r.batch_size):
        st = r.stats
        assert st is not None
        lines.append(
            f"| {r.batch_size} | {r.info.engine} | {r.info.device} | {r.info.mode} | "
            f"{_ms(st.p50_ms)} | {_ms(st.p90_ms)} | {_ms(st.p99_ms)} | {_ms(st.mean_ms)} | "
            f"{_ms(st.min_ms)} | {_rate(st.throughput)} | {st.runs} | {st.warmup} |"
        )
    lines += [
        "",
        "\\* untimed runs: the warm-up plus one at the start of each round.",
    ]
    ratios = report.ratios
    lines += ["", "## ORT / PyTorch throughput ratios", ""]
    if ratios:
        lines += [
            "Throughput ratio (what the targets use) and, for comparison, the p50 latency ratio, "
            "which stalls caused by other jobs on the machine move less.",
            "",
            "| batch | onnxruntime | peer | ORT / peer throughput | peer / ORT p50 |",
            "| ---: | --- | --- | ---: | ---: |",
        ]
        lines += [
            f"| {q.batch_size} | {q.ort} | {q.peer} | {q.ratio:.2f}× | {q.p50_ratio:.2f}× |"
            for q in sorted(ratios, key=lambda q: q.batch_size)
        ]
    else:
        lines.append("No ratio: no batch size has both an ORT row and a PyTorch row measured.")
    lines += [
        "",
        "## Targets",
        "",
        "| target | result | detail |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t.description} | {t.status} | {t.detail} |" for t in report.targets]
    compiled = [r for r in measured if "compile_s" in r.extras]
    if compiled:
        lines += [
            "",
            "## torch.compile: compile time (not in the latency figures)",
            "",
            "The wall time of the first call at each batch size: dynamo tracing, inductor code "
            "generation and the C++/Triton build (inductor's on-disk cache shortens repeat runs).",
            "",
            "| batch | device | mode | compile s |",
            "| ---: | --- | --- | ---: |",
        ]
        lines += [
            f"| {r.batch_size} | {r.info.device} | {r.info.mode} | {r.extras['compile_s']:.2f} |"
            for r in compiled
        ]
    not_run = [r for r in report.rows if r.stats is None]
    if not_run:
        lines += ["", "## Not measured", ""]
        grouped: dict[tuple[str, str, str], list[int]] = {}
        for r in not_run:
            grouped.setdefault((r.info.label, r.status, r.reason), []).append(r.batch_size)
        for (label, status, reason), batches in grouped.items():
            lines.append(
                f"- {status.upper()} | {label} | batch {', '.join(map(str, batches))} | {reason}"
            )
    lines += ["", "## Engine settings", ""]
    for e in report.engines:
        settings = ", ".join(f"{k}={_setting(val)}" for k, val in e.settings.items())
        lines.append(f"- {e.label} ({e.provider}): {settings}")
    checked = [r for r in report.rows if r.check]
    if checked:
        lines += ["", "## Output check (before timing)", ""]
        lines += [f"- batch {r.batch_size}, {r.info.label}: {r.check}" for r in checked]
    return "\n".join(lines) + "\n"


def _setting(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


def command_line(argv: Sequence[str] | None = None) -> str:
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["onnxedge", *args])
