"""`tune`: time every candidate setup (`candidates`) with bench's timed loop and choose the
fastest at each batch size.

1. Timing is `onnxedge bench`'s (`run_benchmark`): the same input for every setup at a batch
   size, each output checked against the reference (ONNX Runtime on model.onnx; an int8 model
   against ONNX Runtime on the int8 model, whose accuracy its gate has judged) before it is
   timed, then interleaved rounds.
2. A setup that failed its check, raised, or could not run is a row with the reason and is never
   chosen. Runoff: where other setups come within `RUNOFF_MARGIN` of the fastest at a batch
   size (the fastest `RUNOFF_MAX` of them), those are timed again, alone together, for
   `RUNOFF_FACTOR` times the seconds, so that a setup is not chosen for one lucky turn on a busy
   machine. The winner is the fastest row of the runoff, or of the first pass where there was
   none.
3. Every row is compared with ONNX Runtime on model.onnx with the default threads (what predict
   runs without ``--tuned``) at the same batch size, where that row was measured.
4. With ``images``: the files stage (`onnxedge.runtime.tune.files`), the fastest models of 1.
   and 2. timed from those files as whole `onnxedge predict` commands with each decoding pool.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onnxedge.runtime.bench import (
    BenchSettings,
    ProgressFn,
    TimingPlan,
    default_threads,
    load_average,
    readable_files,
    run_benchmark,
    sample_shape,
)
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.args import check_kinds
from onnxedge.runtime.classifier.loader import DEFAULT_BATCH_SIZE
from onnxedge.runtime.classifier.preprocess import check_decode, trained_decode
from onnxedge.runtime.engines import ONNXRUNTIME
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.tune.candidates import Candidates, Excluded, build_candidates
from onnxedge.runtime.tune.file import manifest_sha256
from onnxedge.runtime.tune.files import FILES_SECONDS, FilesTune, files_plan, tune_files
from onnxedge.runtime.tune.fingerprint import machine_fingerprint
from onnxedge.runtime.tune.rows import TuneRow, tune_rows
from onnxedge.runtime.tune.setup import TunedSetup
from onnxedge.runtime.variants.manifest import FP32

DEFAULT_BATCH_SIZES = (1, 64)
DEFAULT_SECONDS = 0.4  # timed seconds per setup x batch size (bench's --seconds)
DEFAULT_ROUNDS = 2
DEFAULT_MIN_RUNS = 10
RUNOFF_MARGIN = 0.15  # setups within 15 % of the fastest are timed again (2.)
RUNOFF_MAX = 4
RUNOFF_FACTOR = 3  # the runoff's timed seconds per setup, in multiples of the first pass's
RUNOFF_ROUNDS = 4


# `check_kinds`: the fields' kinds, before their values are checked.
_KINDS = {"batch_sizes": "ints", "engines": "names?", "variants": "names?", "threads": "ints?"}
_KINDS |= {"seconds": "number", "files_seconds": "number", "images": "several"}
_KINDS |= dict.fromkeys(("rounds", "warmup", "min_runs", "seed", "images_batch_size"), "int")


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    engines: tuple[str, ...] | None = None  # None: every engine installed
    variants: tuple[str, ...] | None = None  # None: fp32 and every gated CPU variant
    threads: tuple[int, ...] | None = None  # None: `default_thread_counts`
    seconds: float = DEFAULT_SECONDS
    rounds: int = DEFAULT_ROUNDS
    warmup: int = 3
    min_runs: int = DEFAULT_MIN_RUNS
    seed: int = 0
    # 4.: the image files to time files to labels on (none: no files stage), their source in
    # words, predict's batch size for them, and the decode (None: the bundle's trained one).
    images: tuple[str, ...] = ()
    images_source: str = ""
    images_batch_size: int = DEFAULT_BATCH_SIZE  # predict's
    decode: str | None = None
    files_seconds: float = FILES_SECONDS

    def __post_init__(self) -> None:
        check_kinds(self, _KINDS)
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise OnnxEdgeError(f"expected batch sizes >= 1, found {list(self.batch_sizes)}")
        if self.threads is not None and (not self.threads or min(self.threads) < 1):
            raise OnnxEdgeError(f"expected thread counts >= 1, found {list(self.threads)}")
        _ = self.plan  # TimingPlan checks the seconds, rounds, warm-up and runs
        _ = files_plan(self.files_seconds)
        if self.decode is not None:
            check_decode(self.decode)
        if self.images_batch_size < 1:
            raise OnnxEdgeError(
                f"expected an images batch size >= 1, found {self.images_batch_size}"
            )

    @property
    def plan(self) -> TimingPlan:
        return TimingPlan(
            warmup=self.warmup,
            seconds=self.seconds,
            min_iters=self.min_runs,
            rounds=self.rounds,
        )

    @property
    def runoff_plan(self) -> TimingPlan:
        return dataclasses.replace(
            self.plan, seconds=self.seconds * RUNOFF_FACTOR, rounds=RUNOFF_ROUNDS
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in dataclasses.asdict(self).items() if k != "images"},
            "images": len(self.images),
            "timing": self.plan.to_dict(),
            "runoff": {
                "who": f"the fastest {RUNOFF_MAX} setups within {RUNOFF_MARGIN:.0%} of the "
                "fastest at a batch size, where there are two or more",
                "timing": self.runoff_plan.to_dict(),
            },
            "intra_op_spinning": True,
        }


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """What `tune` measured: the winner at each batch size, the full table, what was left out,
    and the bundle and machine it holds for."""

    bundle: Path
    manifest_sha256: str
    machine: Mapping[str, Any]
    settings: TuneSettings
    rows: tuple[TuneRow, ...]
    excluded: tuple[Excluded, ...]
    default: TunedSetup
    date: str
    command: str = ""
    load_average: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    runoff: tuple[TuneRow, ...] = ()  # 2.: the close setups timed again
    files: FilesTune | None = None  # 4.

    def __bool__(self) -> bool:
        return bool(self.winners)

    @property
    def winners(self) -> dict[int, TuneRow]:
        """2.: the fastest measured row at each batch size that has one, from the runoff where
        there was one."""
        best: dict[int, TuneRow] = {}
        runoff = {r.batch_size for r in self.runoff if r}
        for row in (*[r for r in self.rows if r.batch_size not in runoff], *self.runoff):
            if not row or row.stats is None:
                continue
            held = best.get(row.batch_size)
            if held is None or row.stats.throughput > held.stats.throughput:  # type: ignore[union-attr]
                best[row.batch_size] = row
        return {b: best[b] for b in self.settings.batch_sizes if b in best}

    def to_dict(self) -> dict[str, Any]:
        from onnxedge.runtime.tune.file import TUNING_FORMAT, TUNING_FORMAT_VERSION

        return {
            "format": TUNING_FORMAT,
            "format_version": TUNING_FORMAT_VERSION,
            "bundle": {"path": str(self.bundle), "manifest_sha256": self.manifest_sha256},
            "machine": dict(self.machine),
            "date": self.date,
            "command": self.command,
            "load_average": dict(self.load_average),
            "settings": self.settings.to_dict(),
            "default": self.default.to_dict(),
            "winners": {
                str(b): {**row.setup.to_dict(), "throughput": row.stats.throughput}  # type: ignore[union-attr]
                for b, row in self.winners.items()
            },
            "rows": [r.to_dict() for r in self.rows],
            "runoff": [r.to_dict() for r in self.runoff],
            "excluded": [e.to_dict() for e in self.excluded],
            **({"files": self.files.to_dict()} if self.files is not None else {}),
        }


def tune(
    bundle_path: str | Path,
    settings: TuneSettings | None = None,
    *,
    command: str = "",
    on_progress: ProgressFn | None = None,
) -> TuneResult:
    """Open the bundle, time every candidate, and return the result (module docstring)."""
    settings = settings or TuneSettings()
    bundle = Bundle.open(bundle_path)
    shape = sample_shape(bundle.input, bundle.preprocessing)
    decode = settings.decode or trained_decode(bundle.preprocessing)
    # 4.: the files that cannot be read, found before the model stage (none readable: an error
    # now, not after minutes of timing)
    images = readable_files(settings.images, bundle.preprocessing, (decode,))
    candidates = build_candidates(
        bundle, variants=settings.variants, engines=settings.engines, threads=settings.threads
    )
    if not candidates.engines:
        reasons = "; ".join(f"{e.what}: {e.reason}" for e in candidates.excluded)
        raise OnnxEdgeError(f"no setup of {bundle.path} can run here ({reasons or 'none asked'})")
    bench_settings = BenchSettings(
        providers=("cpu",),
        batch_sizes=settings.batch_sizes,
        peers=(),
        plan=settings.plan,
        seed=settings.seed,
    )
    load_before = load_average()
    default = TunedSetup(FP32, ONNXRUNTIME, "f32", default_threads())
    try:
        rows = tune_rows(
            run_benchmark(candidates.engines, shape, bench_settings, on_progress=on_progress),
            candidates.setups,
            default,
        )  # 1.
        runoff = _runoff(rows, candidates, shape, settings, default, on_progress)  # 2.
    finally:
        for engine in candidates.engines:
            engine.close()
    files = None
    if settings.images:  # 4.
        files = tune_files(
            bundle,
            rows,
            images,
            source=settings.images_source,
            batch_size=settings.images_batch_size,
            decode=decode,
            plan=files_plan(settings.files_seconds),
            on_progress=on_progress,
        )
    return TuneResult(
        bundle=bundle.path,
        manifest_sha256=manifest_sha256(bundle),
        machine=machine_fingerprint(),
        settings=settings,
        rows=rows,
        runoff=runoff,
        excluded=candidates.excluded,
        default=default,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command,
        load_average={"before": load_before, "after": load_average()},
        files=files,
    )


def runoff_setups(rows: Sequence[TuneRow], batch: int) -> list[TuneRow]:
    """2.: the rows at ``batch`` that go to a runoff: the fastest `RUNOFF_MAX` within
    `RUNOFF_MARGIN` of the fastest, where there are two or more; none otherwise."""
    measured = sorted(
        (r for r in rows if r and r.stats is not None and r.batch_size == batch),
        key=lambda r: -r.stats.throughput,  # type: ignore[union-attr]
    )
    if not measured:
        return []
    floor = (1 - RUNOFF_MARGIN) * measured[0].stats.throughput  # type: ignore[union-attr]
    close = [r for r in measured if r.stats.throughput >= floor][:RUNOFF_MAX]  # type: ignore[union-attr]
    return close if len(close) > 1 else []


def _runoff(
    rows: Sequence[TuneRow],
    candidates: Candidates,
    shape: Sequence[int],
    settings: TuneSettings,
    default: TunedSetup,
    on_progress: ProgressFn | None,
) -> tuple[TuneRow, ...]:
    """2.: the close setups at each batch size timed again, each row keeping the check it
    passed in the first pass (the runoff's first engine is its own reference)."""
    engine_of = {candidates.setup_of(e.info): e for e in candidates.engines}
    out: list[TuneRow] = []
    for batch in settings.batch_sizes:
        close = runoff_setups(rows, batch)
        if not close:
            continue
        bench_settings = BenchSettings(
            providers=("cpu",),
            batch_sizes=(batch,),
            peers=(),
            plan=settings.runoff_plan,
            seed=settings.seed,
        )
        engines = [engine_of[r.setup] for r in close]
        timed = tune_rows(
            run_benchmark(engines, shape, bench_settings, on_progress=on_progress),
            candidates.setups,
            default,
        )
        checks = {r.setup: r.check for r in close}
        out += [dataclasses.replace(r, check=checks[r.setup]) if r else r for r in timed]
    return tuple(out)


__all__ = [
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_SECONDS",
    "RUNOFF_MARGIN",
    "RUNOFF_MAX",
    "TuneResult",
    "TuneRow",
    "TuneSettings",
    "manifest_sha256",
    "runoff_setups",
    "tune",
]
