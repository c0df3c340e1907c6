"""`tune --images`: which model, engine and decoding pool turn image files into labels fastest
here, timed as the user runs it: whole `onnxedge predict` commands over the files.

The fastest model is not always the fastest from files: the decode takes CPU that the model
would have had, and the pools share it out differently on each CPU (docs/BENCHMARKS.md, "tune
--images"). And a pass of `Classifier.predict_files` in a warm process leaves out what each
command pays once (imports, verifying the bundle, the session or OpenVINO's compile, the
pool's start): on the AMD EPYC Zen 2, OpenVINO int8-u8 with two decoding threads was 1.15x
ONNX Runtime fp32's batch processes as such a pass over 1,024 files and 0.95x as a command over
3,000.

1. Models: on each engine, its `FILES_MODELS` fastest variants in the model-only pass at the
   batch size nearest ``images_batch_size`` (on a log scale), ONNX Runtime on fp32 (predict's
   default), and the gated uint8-input variants made from any of them
   (``optimize --uint8-input``: they take the decoded pixels, so only a run from files times
   them). Each runs with predict's default threads (its pools share out the CPUs themselves).
2. Pools: each of `POOLS` at its default size (`pool_arguments`): batch processes, decoder
   processes, decoding threads. OpenVINO has no batch processes (its ``compile_model`` waits for
   ever in a forked child): left out with that reason.
3. The files that cannot be read (`readable_files`, found before the model stage) are left
   out and named: predict would write an ``ERROR`` line for each, and every setup's check
   would fail on them. A timed run is `predict_command`: ``onnxedge predict`` (this
   interpreter's) with the setup's options over the files, its wall time from start to exit.
   Each setup's first run is its check, not timed: exit 0, every file classified, each
   probability as the same model's on a serial decode of the files (`serial_probabilities`,
   atol `FILES_ATOL`); a setup that fails it (or times out after `FILES_TIMEOUT` s) is a row
   with the reason, never chosen. Then ``seconds`` of runs a setup (at least
   `FILES_MIN_PASSES`), interleaved in `FILES_ROUNDS` rounds.
4. Every row is compared with ONNX Runtime on fp32 with predict's default pool (what
   ``predict`` runs without ``--tuned``). The winner is the fastest row where it is at least
   `FILES_MARGIN` faster than that default, else the default itself: commands of the same
   setup vary by a few percent from run to run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bench import (
    FILES_ATOL,
    BenchModel,
    LatencyStats,
    ProgressFn,
    ReadableFiles,
    TimingPlan,
    bench_models,
    serial_probabilities,
)
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.decode import (
    POOL_ARGUMENTS,
    POOLS,
    file_pool,
    pool_arguments,
)
from onnxedge.runtime.classifier.preprocess import ImageReadError
from onnxedge.runtime.engines import DEFAULT_PRECISION, ONNXRUNTIME, OPENVINO
from onnxedge.runtime.errors import OnnxEdgeError, first_line
from onnxedge.runtime.tune.candidates import Excluded
from onnxedge.runtime.tune.rows import TuneRow, compared
from onnxedge.runtime.tune.setup import FilesSetup
from onnxedge.runtime.variants.manifest import FP32

FILES_MODELS = 2  # 1.: the fastest variants of each engine taken on to the files
FILES_LIMIT = 1024  # files timed by default: the first of the folder's, in predict's order
FILES_SECONDS = 4.0  # timed seconds per setup (at least FILES_MIN_PASSES runs)
FILES_MIN_PASSES = 3
FILES_TIMEOUT = 600.0  # 3.: seconds one command may take
FILES_ROUNDS = 2
FILES_MARGIN = 0.05  # 4.: what the fastest must gain over predict's default to be chosen


@dataclasses.dataclass(frozen=True)
class FilesTune:
    """What the files stage measured: its rows, what it left out, and how."""

    files: int
    source: str
    batch_size: int
    decode: str
    rows: tuple[TuneRow, ...]
    excluded: tuple[Excluded, ...]
    default: FilesSetup
    plan: TimingPlan
    # 3.: the files timed and those left out
    readable: ReadableFiles = dataclasses.field(default_factory=ReadableFiles)

    @property
    def fastest(self) -> TuneRow | None:
        """The fastest measured row, or None where none could be measured."""
        measured = [r for r in self.rows if r and r.stats is not None]
        return max(measured, key=lambda r: r.stats.throughput) if measured else None  # type: ignore[union-attr]

    @property
    def default_row(self) -> TuneRow | None:
        """The default setup's row where it was measured."""
        return next((r for r in self.rows if r and r.stats and r.setup == self.default), None)

    @property
    def winner(self) -> TuneRow | None:
        """4.: the fastest row where it gains at least `FILES_MARGIN` over the default's (or
        the default could not be measured), else the default's row."""
        fastest, default = self.fastest, self.default_row
        if fastest is None or default is None:
            return fastest
        gain = fastest.stats.throughput / default.stats.throughput  # type: ignore[union-attr]
        return fastest if gain >= 1 + FILES_MARGIN else default

    def to_dict(self) -> dict[str, Any]:
        winner = self.winner
        return {
            "files": self.files,
            "source": self.source,
            "batch_size": self.batch_size,
            "decode": self.decode,
            "timing": self.plan.to_dict(),
            "default": self.default.to_dict(),
            "margin": FILES_MARGIN,
            "fastest": self.fastest.setup.to_dict() if self.fastest else None,
            "winner": (
                {**winner.setup.to_dict(), "throughput": winner.stats.throughput}  # type: ignore[union-attr]
                if winner
                else None
            ),
            "rows": [r.to_dict() for r in self.rows],
            "excluded": [e.to_dict() for e in self.excluded],
            **self.readable.to_dict(),
        }


def files_plan(seconds: float = FILES_SECONDS) -> TimingPlan:
    """3.: the check's run untimed, then ``seconds`` of runs (at least `FILES_MIN_PASSES`) in
    `FILES_ROUNDS` interleaved rounds."""
    return TimingPlan(warmup=1, seconds=seconds, min_iters=FILES_MIN_PASSES, rounds=FILES_ROUNDS)


def files_models(
    bundle: Bundle, model_rows: Sequence[Any], batch_size: int
) -> tuple[list[tuple[BenchModel, str]], list[Excluded]]:
    """1.: the (model, engine) pairs to time from files, fastest model-only first, and the
    uint8-input variants left out (not gated, or made from a model not taken)."""
    measured = [r for r in model_rows if r and r.stats is not None]
    sizes = sorted({r.batch_size for r in measured})
    pairs: list[tuple[str, str]] = []
    if sizes:
        near = min(sizes, key=lambda b: (abs(math.log(b / batch_size)), -b))
        ranked = sorted(
            (r for r in measured if r.batch_size == near), key=lambda r: -r.stats.throughput
        )
        for row in ranked:
            pair = (row.setup.variant, row.setup.engine)
            same_engine = sum(e == row.setup.engine for _, e in pairs)
            if pair not in pairs and same_engine < FILES_MODELS:
                pairs.append(pair)
    if (FP32, ONNXRUNTIME) not in pairs:
        pairs.append((FP32, ONNXRUNTIME))
    taken = {v for v, _ in pairs}
    pixels = [n for n, e in bundle.variants.items() if "input" in e.block]
    excluded: list[Excluded] = []
    models = {m.variant: m for m in (bench_models(bundle, pixels) if pixels else [])}
    for model in models.values():
        entry = bundle.variants[model.variant]
        if not entry.gated:
            excluded.append(Excluded(model.variant, "not gated (written with --no-gate)"))
        elif not model.made_for("cpu"):
            excluded.append(Excluded(model.variant, f"made for {', '.join(model.providers)}"))
        elif model.pixels_of not in taken:
            excluded.append(
                Excluded(
                    model.variant,
                    f"made from {model.pixels_of}, which is not among the fastest models",
                )
            )
        else:
            pairs += [(model.variant, e) for v, e in list(pairs) if v == model.pixels_of]
    others = [v for v in dict.fromkeys(v for v, _ in pairs) if v not in models]
    models.update((m.variant, m) for m in bench_models(bundle, others))  # each verified once
    return [(models[v], e) for v, e in pairs], excluded


def tune_files(
    bundle: Bundle,
    model_rows: Sequence[Any],
    images: ReadableFiles,
    *,
    source: str,
    batch_size: int,
    decode: str,
    plan: TimingPlan,
    on_progress: ProgressFn | None = None,
) -> FilesTune:
    """Time the files setups (module docstring) on ``images.files`` (`readable_files`: those
    the decode reads) and return them with the winner."""
    paths = images.files
    chosen, excluded = files_models(bundle, model_rows, batch_size)
    default = default_setup(paths, batch_size, decode)
    if any(engine == OPENVINO for _, engine in chosen):  # 2.
        excluded.append(
            Excluded(
                f"{OPENVINO} with batch processes",
                "OpenVINO's compile_model waits for ever in a forked child",
            )
        )
    setups = [
        FilesSetup(model.variant, engine, DEFAULT_PRECISION, pool, _workers(pool), decode)
        for model, engine in chosen
        for pool in POOLS
        if not (engine == OPENVINO and pool == "batches")  # 2.
    ]
    total = len(setups) * (1 + plan.min_iters)
    done = 0

    def step(setup: FilesSetup) -> None:
        nonlocal done
        done += 1
        if on_progress:
            on_progress(f"from files: {setup.describe()}", min(done, total), total)

    checked: dict[FilesSetup, tuple[str, str, float]] = {}  # 3.: status, check or reason, wall
    references: dict[tuple[str, str], np.ndarray | str] = {}
    for setup in setups:
        key = (setup.variant, setup.engine)
        if key not in references:
            references[key] = _reference(bundle, setup, paths, batch_size)
        checked[setup] = _check(bundle, setup, paths, batch_size, references[key])
        step(setup)
    walls: dict[FilesSetup, list[float]] = {s: [] for s in setups}
    failed: dict[FilesSetup, str] = {}
    for _ in range(plan.rounds):  # 3.: interleaved rounds
        for setup in setups:
            status, _, first = checked[setup]
            if status != "ok" or setup in failed:
                continue
            runs = max(
                math.ceil(plan.min_iters / plan.rounds),
                math.ceil(plan.seconds / plan.rounds / max(first, 1e-3)),
            )
            for _ in range(runs):
                wall, outcome = run_predict(bundle, setup, paths, batch_size)
                if isinstance(outcome, str):
                    failed[setup] = outcome
                    break
                walls[setup].append(wall)
                step(setup)
    rows = []
    for setup in setups:
        status, check, _ = checked[setup]
        if status == "ok" and setup in failed:
            status, check = "failed", failed[setup]
        stats = None
        if status == "ok":
            stats = LatencyStats.from_seconds(
                walls[setup], batch_size=batch_size, warmup=1, images_per_call=len(paths)
            )
        reason = "" if status == "ok" else check
        rows.append(
            TuneRow(setup, batch_size, status, reason, check if status == "ok" else "", stats)
        )
    return FilesTune(
        files=len(paths),
        source=source,
        batch_size=batch_size,
        decode=decode,
        rows=compared(rows, default),
        excluded=tuple(excluded),
        default=default,
        plan=plan,
        readable=images,
    )


def predict_command(
    bundle: Bundle, setup: FilesSetup, paths: Sequence[str], batch_size: int
) -> list[str]:
    """3.: the `onnxedge predict` command a timed run is: the setup's engine, variant, decode
    and pool, JSON lines on stdout, the files after ``--``."""
    pool = "--" + POOL_ARGUMENTS[setup.pool].replace("_", "-")
    return [
        *onnxedge_command(), "predict",
        "--providers", "cpu", "--engines", setup.engine, "--variant", setup.variant,
        "--precision", setup.precision, "--decode", setup.decode, pool, str(setup.workers),
        "--batch-size", str(batch_size), "--json", "-", "--no-progress",
        "--", str(bundle.path), *map(str, paths),
    ]  # fmt: skip


def onnxedge_command() -> list[str]:
    """The ``onnxedge`` command of this interpreter: its console script beside it, else
    ``python -m onnxedge.runtime``."""
    script = Path(sys.executable).with_name("onnxedge")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", (__package__ or "").rpartition(".")[0]]


def run_predict(
    bundle: Bundle, setup: FilesSetup, paths: Sequence[str], batch_size: int
) -> tuple[float, list[float] | str]:
    """One timed run: (wall seconds, each file's probability in order), or the reason it
    failed in place of the probabilities."""
    command = predict_command(bundle, setup, paths, batch_size)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=FILES_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return FILES_TIMEOUT, f"onnxedge predict took more than {FILES_TIMEOUT:.0f} s"
    except OSError as e:  # e.g. more file names than a command line holds: a smaller limit
        return 0.0, f"cannot start onnxedge predict over {len(paths)} files: {e}"
    wall = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return wall, f"onnxedge predict exited {done.returncode}: {last}"
    try:
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        probabilities = [float(line["probability"]) for line in lines]
    except (ValueError, KeyError, TypeError) as e:
        return wall, f"onnxedge predict wrote other output than one JSON line a file ({e})"
    return wall, probabilities


def _reference(
    bundle: Bundle, setup: FilesSetup, paths: Sequence[str], batch_size: int
) -> np.ndarray | str:
    """3.: the model's probabilities on a serial decode, or why it could not run here."""
    from onnxedge.runtime.classifier.classifier import Classifier

    try:
        classifier = Classifier.from_bundle(
            bundle.path, "cpu", engine=setup.engine, variant=setup.variant, decode=setup.decode
        )
        return serial_probabilities(classifier, list(paths), batch_size)
    except (OnnxEdgeError, ImageReadError) as e:
        return first_line(e)


def _check(
    bundle: Bundle,
    setup: FilesSetup,
    paths: Sequence[str],
    batch_size: int,
    reference: np.ndarray | str,
) -> tuple[str, str, float]:
    """3.: (status, what the check found or why it failed, the run's wall seconds)."""
    if isinstance(reference, str):
        return "skipped", reference, 0.0
    wall, outcome = run_predict(bundle, setup, paths, batch_size)
    if isinstance(outcome, str):
        return "failed", outcome, wall
    if len(outcome) != len(paths):
        return "failed", f"{len(outcome)} of {len(paths)} files classified", wall
    worst = float(np.max(np.abs(np.asarray(outcome) - reference))) if outcome else 0.0
    if not worst <= FILES_ATOL:
        return (
            "failed",
            (
                f"probabilities differ from a serial decode of the same files: max abs error "
                f"{worst:.3g} > {FILES_ATOL:g}"
            ),
            wall,
        )
    return (
        "ok",
        (
            f"PASSED: {len(paths)} files classified by onnxedge predict, probabilities as a serial "
            f"decode's (max abs error {worst:.2g}, atol {FILES_ATOL:g})"
        ),
        wall,
    )


def default_setup(paths: Sequence[str], batch_size: int, decode: str) -> FilesSetup:
    """4.: what ``predict`` runs on ``paths`` without ``--tuned``: ONNX Runtime fp32 with
    `file_pool`'s pool for them (threads for one batch or fewer, or for large files; else batch
    processes where processes are forked)."""
    pool = file_pool(
        None,
        None,
        None,
        batch_sessions=True,
        files=len(paths),
        batch_size=batch_size,
        sample=paths[:batch_size],
    )
    return FilesSetup(FP32, ONNXRUNTIME, DEFAULT_PRECISION, pool.name, pool.workers, decode)


def _workers(pool: str) -> int:
    return next(iter(pool_arguments(pool).values()))


__all__ = [
    "FILES_LIMIT",
    "FILES_MARGIN",
    "FILES_MODELS",
    "FILES_SECONDS",
    "FILES_TIMEOUT",
    "FilesSetup",
    "FilesTune",
    "default_setup",
    "files_models",
    "files_plan",
    "predict_command",
    "run_predict",
    "tune_files",
]
