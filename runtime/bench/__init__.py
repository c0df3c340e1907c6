"""`onnxedge bench`: latency and throughput of a bundle under ONNX Runtime, with PyTorch peers.

Users choose a deployment from these numbers, so every report states how they were made:

1. Inputs: one float32 array per batch size, uniform in [0, 1) from a fixed seed; every engine
   gets the same array (`timing.make_input`).
2. Interleaving: batch sizes in order; at each batch size every engine is prepared and warmed up,
   its output is checked against the reference engine (ORT's CPU EP), and then the timed runs are
   split into rounds in which the engines take turns. Drift on a noisy machine (other jobs, clock
   changes) hits all engines alike, so the ratios hold. Each turn starts with one untimed run,
   which absorbs the previous engine's worker threads still spinning (`timing.run_benchmark`).
3. Clock: `time.perf_counter_ns` around each call. A call returns only when its outputs are ready:
   host arrays for the end-to-end modes, an explicit device synchronisation for the
   device-resident and CUDA-graph modes (`ort`).
4. Statistics (`stats.LatencyStats`): percentiles with numpy's ``linear`` method
   (``PERCENTILE_METHOD``); throughput = batch size / mean latency, i.e. images per second of
   back-to-back calls.
5. An engine whose output differs from the reference is not timed (status ``failed``); an engine
   that cannot run here is a ``skipped`` row with the reason, never a number.

The modules, by what changes together: `engines` (what an engine is, the PyTorch peers), `ort`
(the ONNX Runtime engines), `settings` and `timing` (what to run, the timed loop), `stats`,
`targets` (ratios and targets), `machine`, `report` and `markdown` (JSON and Markdown), `plot`
(the PNG, imported only for ``--plot``), and `run` (`benchmark`: all of them in order).

This package never imports torch. The PyTorch peers live in `onnxedge.models.peers` and are
imported by name only where torch is importable (`engines.peer_engines`)."""

from __future__ import annotations

from onnxedge.runtime.bench.engines import (
    E2E,
    GRAPH,
    ORT,
    PEER_MODE,
    PEERS,
    PROVIDER_DEVICE,
    PYTORCH,
    RESIDENT,
    AnyEngine,
    Engine,
    EngineInfo,
    Runner,
    SkippedEngine,
    peer_engines,
    peer_info,
    peer_modes,
)
from onnxedge.runtime.bench.machine import (
    BUSY_LOAD_PER_CORE,
    default_threads,
    load_average,
    machine_info,
    versions,
)
from onnxedge.runtime.bench.markdown import render_markdown
from onnxedge.runtime.bench.ort import OrtEngine, ort_engines
from onnxedge.runtime.bench.report import BenchReport, command_line
from onnxedge.runtime.bench.run import benchmark
from onnxedge.runtime.bench.settings import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_PROVIDERS,
    MIN_RUNS_TO_JUDGE,
    UNTIMED_PER_ROUND,
    BenchSettings,
    TimingPlan,
)
from onnxedge.runtime.bench.stats import PERCENTILE_METHOD, THROUGHPUT_DEFINITION, LatencyStats
from onnxedge.runtime.bench.targets import (
    TARGETS,
    Ratio,
    Target,
    TargetResult,
    compute_ratios,
    evaluate_target,
    evaluate_targets,
)
from onnxedge.runtime.bench.timing import BenchRow, ProgressFn, make_input, run_benchmark

__all__ = [
    "BUSY_LOAD_PER_CORE",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_PROVIDERS",
    "E2E",
    "GRAPH",
    "MIN_RUNS_TO_JUDGE",
    "ORT",
    "PEERS",
    "PEER_MODE",
    "PERCENTILE_METHOD",
    "PROVIDER_DEVICE",
    "PYTORCH",
    "RESIDENT",
    "TARGETS",
    "THROUGHPUT_DEFINITION",
    "UNTIMED_PER_ROUND",
    "AnyEngine",
    "BenchReport",
    "BenchRow",
    "BenchSettings",
    "Engine",
    "EngineInfo",
    "LatencyStats",
    "OrtEngine",
    "ProgressFn",
    "Ratio",
    "Runner",
    "SkippedEngine",
    "Target",
    "TargetResult",
    "TimingPlan",
    "benchmark",
    "command_line",
    "compute_ratios",
    "default_threads",
    "evaluate_target",
    "evaluate_targets",
    "load_average",
    "machine_info",
    "make_input",
    "ort_engines",
    "peer_engines",
    "peer_info",
    "peer_modes",
    "render_markdown",
    "run_benchmark",
    "versions",
]
