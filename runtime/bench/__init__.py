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
6. Targets are the user's (``--target``, ``--targets FILE.toml``; none by default): MET or MISSED
   only from at least `MIN_RUNS_TO_JUDGE` timed runs of every engine they compare, INDICATIVE
   from fewer, NOT MEASURED with the reason where an engine could not run.

The modules, by what changes together: `engines` (what an engine is, the PyTorch peers),
`models` (which of the bundle's models: ``--variants``), `ort` (the ONNX Runtime engines),
`openvino` (OpenVINO's), `files` (the from-files rows: predict's code over image files),
`settings` and `timing` (what to run, the timed loop), `stats`, `ratios` (ORT over each peer,
every model and engine over ORT fp32), `targets` (the user's targets: grammar and TOML file) and
`verdicts` (each target judged), `machine`, `report` and `markdown` (JSON and Markdown), `plot`
(the PNG, imported only for ``--plot``), and `run` (`benchmark`: all of them in order).

This package never imports torch. The PyTorch peers live in `onnxedge.models.peers`, behind the
interface `peers` owns (`PeerBuilder`), and are imported by name only where torch is importable
(`peers.peer_engines`); they import `engines`, never the benchmark's run."""

from __future__ import annotations

from onnxedge.runtime.bench.engines import (
    E2E,
    FILES,
    GRAPH,
    ORT,
    PEER_MODE,
    PEERS,
    PRECISIONS,
    PROVIDER_DEVICE,
    PYTORCH,
    RESIDENT,
    VARIANTS,
    AnyEngine,
    Engine,
    EngineInfo,
    Runner,
    SkippedEngine,
    ort_engine_name,
    peer_info,
    peer_modes,
    target_engines,
)
from onnxedge.runtime.bench.files import (
    FILES_ATOL,
    FilesEngine,
    ReadableFiles,
    files_engines,
    readable_files,
    serial_probabilities,
)
from onnxedge.runtime.bench.machine import (
    BUSY_LOAD_PER_CORE,
    default_threads,
    load_average,
    machine_info,
    versions,
)
from onnxedge.runtime.bench.markdown import render_markdown
from onnxedge.runtime.bench.models import LOW_PRECISION_ATOL, BenchModel, bench_models, fp32_model
from onnxedge.runtime.bench.openvino import OpenVinoEngine, openvino_engines
from onnxedge.runtime.bench.ort import OrtEngine, ort_engines
from onnxedge.runtime.bench.peers import PEER_BUILDER, PeerBuilder, peer_engines
from onnxedge.runtime.bench.ratios import (
    EngineRatio,
    Ratio,
    compute_engine_ratios,
    compute_ratios,
)
from onnxedge.runtime.bench.report import BenchReport, command_line
from onnxedge.runtime.bench.run import benchmark, sample_shape
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
    DEVICES,
    GRAMMAR_HINT,
    LATENCY,
    MODES,
    RATIO,
    Side,
    Target,
    TargetError,
    check_targets_fit,
    format_latency,
    parse_target,
    parse_targets,
    read_targets_file,
    unique_targets,
)
from onnxedge.runtime.bench.timing import BenchRow, ProgressFn, make_input, run_benchmark
from onnxedge.runtime.bench.verdicts import (
    INDICATIVE,
    MET,
    MISSED,
    NOT_MEASURED,
    TargetResult,
    evaluate_target,
    evaluate_targets,
)
from onnxedge.runtime.engines.cpu import cpu_flags

__all__ = [
    "BUSY_LOAD_PER_CORE",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_PROVIDERS",
    "DEVICES",
    "E2E",
    "FILES",
    "FILES_ATOL",
    "GRAMMAR_HINT",
    "GRAPH",
    "INDICATIVE",
    "LATENCY",
    "LOW_PRECISION_ATOL",
    "MET",
    "MIN_RUNS_TO_JUDGE",
    "MISSED",
    "MODES",
    "NOT_MEASURED",
    "ORT",
    "PEERS",
    "PEER_BUILDER",
    "PEER_MODE",
    "PERCENTILE_METHOD",
    "PRECISIONS",
    "PROVIDER_DEVICE",
    "PYTORCH",
    "RATIO",
    "RESIDENT",
    "THROUGHPUT_DEFINITION",
    "UNTIMED_PER_ROUND",
    "VARIANTS",
    "AnyEngine",
    "BenchModel",
    "BenchReport",
    "BenchRow",
    "BenchSettings",
    "Engine",
    "EngineInfo",
    "EngineRatio",
    "FilesEngine",
    "LatencyStats",
    "OpenVinoEngine",
    "OrtEngine",
    "PeerBuilder",
    "ProgressFn",
    "Ratio",
    "ReadableFiles",
    "Runner",
    "Side",
    "SkippedEngine",
    "Target",
    "TargetError",
    "TargetResult",
    "TimingPlan",
    "bench_models",
    "benchmark",
    "check_targets_fit",
    "command_line",
    "compute_engine_ratios",
    "compute_ratios",
    "cpu_flags",
    "default_threads",
    "evaluate_target",
    "evaluate_targets",
    "files_engines",
    "format_latency",
    "fp32_model",
    "load_average",
    "machine_info",
    "make_input",
    "openvino_engines",
    "ort_engine_name",
    "ort_engines",
    "parse_target",
    "parse_targets",
    "peer_engines",
    "peer_info",
    "peer_modes",
    "read_targets_file",
    "readable_files",
    "render_markdown",
    "run_benchmark",
    "sample_shape",
    "serial_probabilities",
    "target_engines",
    "unique_targets",
    "versions",
]
