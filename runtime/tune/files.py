"""`tune --images`: which model, engine and decoding pool turn image files into labels fastest
here, measured through predict's own code (`Classifier.predict_files`), not on the model alone.

The fastest model is not always the fastest from files: the decode takes CPU that the model
would have had, and the pools share it out differently on each CPU (docs/BENCHMARKS.md, "Files
to labels"; on an AMD EPYC Zen 2, OpenVINO int8 was the fastest model at batch 64 and ONNX
Runtime fp32 the fastest from files).

1. Models: on each engine, its `FILES_MODELS` fastest variants in the model-only pass at the
   batch size nearest ``images_batch_size`` (on a log scale), ONNX Runtime on fp32 (predict's
   default), and the gated uint8-input variants made from any of them
   (``optimize --uint8-input``: they take the decoded pixels, so only a run from files times
   them). Each runs with predict's default threads (its pools share out the CPUs themselves).
2. Pools: each of `POOLS` at its default size (`pool_arguments`): batch processes, decoder
   processes, decoding threads. OpenVINO has no batch processes (its ``compile_model`` waits for
   ever in a forked child): left out with that reason.
3. Timing is bench's from-files rows (`onnxedge.runtime.bench.files`): each setup first checked
   (every file classified, each probability as a serial decode's), then whole passes over the
   files, interleaved in rounds; a setup that fails its check or raises is a row with the reason
   and is never chosen. Each pass starts its pool, as a predict run does.
4. Every row is compared with ONNX Runtime on fp32 with predict's default pool (what
   ``predict`` runs without ``--tuned``). The winner is the fastest row where it is at least
   `FILES_MARGIN` faster than that default, else the default itself: a pass excludes what a
   command pays once (imports, the engine's start: about 0.15 s more for OpenVINO than for
   ONNX Runtime on the AMD EPYC Zen 2), which a few percent over a run of a few thousand files
   does not repay (docs/BENCHMARKS.md, "tune --images").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from onnxedge.runtime.bench import (
    BenchModel,
    BenchSettings,
    ProgressFn,
    TimingPlan,
    bench_models,
    files_engine,
    run_benchmark,
)
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.decode import (
    POOLS,
    default_decode_pool,
    pool_arguments,
)
from onnxedge.runtime.engines import DEFAULT_PRECISION, ONNXRUNTIME, OPENVINO
from onnxedge.runtime.tune.candidates import Excluded
from onnxedge.runtime.tune.rows import TuneRow, tune_rows
from onnxedge.runtime.tune.setup import FilesSetup
from onnxedge.runtime.variants.manifest import FP32

FILES_MODELS = 2  # 1.: the fastest variants of each engine taken on to the files
FILES_LIMIT = 1024  # files timed by default: the first of the folder's, in predict's order
FILES_SECONDS = 1.0  # timed seconds per setup (at least FILES_MIN_PASSES passes)
FILES_MIN_PASSES = 3
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
        }


def files_plan(seconds: float = FILES_SECONDS) -> TimingPlan:
    """3.: one warm-up pass, then ``seconds`` of passes (at least `FILES_MIN_PASSES`) in
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
    for model in bench_models(bundle, pixels) if pixels else []:
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
    models = {m.variant: m for m in bench_models(bundle, list(dict.fromkeys(v for v, _ in pairs)))}
    return [(models[v], e) for v, e in pairs], excluded


def tune_files(
    bundle: Bundle,
    model_rows: Sequence[Any],
    paths: Sequence[str],
    *,
    source: str,
    batch_size: int,
    decode: str,
    plan: TimingPlan,
    shape: Sequence[int] = (1,),
    seed: int = 0,
    on_progress: ProgressFn | None = None,
) -> FilesTune:
    """Time the files setups (module docstring) and return them with the winner."""
    chosen, excluded = files_models(bundle, model_rows, batch_size)
    default_pool = _pool_name(default_decode_pool(batch_sessions=True))
    default = FilesSetup(
        FP32, ONNXRUNTIME, DEFAULT_PRECISION, default_pool, _workers(default_pool), decode
    )
    engines, setups = [], {}
    if any(engine == OPENVINO for _, engine in chosen):  # 2.
        excluded.append(
            Excluded(
                f"{OPENVINO} with batch processes",
                "OpenVINO's compile_model waits for ever in a forked child",
            )
        )
    for model, engine in chosen:
        for pool in POOLS:
            if engine == OPENVINO and pool == "batches":  # 2.
                continue
            built = files_engine(bundle.path, model, engine, decode, paths, batch_size, None, pool)
            engines.append(built)
            setups[id(built.info)] = FilesSetup(
                model.variant, engine, DEFAULT_PRECISION, pool, _workers(pool), decode
            )
    settings = BenchSettings(
        providers=("cpu",), batch_sizes=(batch_size,), peers=(), plan=plan, seed=seed
    )
    try:
        rows = run_benchmark(engines, shape, settings, on_progress=on_progress)  # 3.
    finally:
        for engine in engines:
            engine.close()
    return FilesTune(
        files=len(paths),
        source=source,
        batch_size=batch_size,
        decode=decode,
        rows=tune_rows(rows, setups, default),
        excluded=tuple(excluded),
        default=default,
        plan=plan,
    )


def _pool_name(pool: Any) -> str:
    if pool.batches:
        return "batches"
    return "processes" if pool.processes else "threads"


def _workers(pool: str) -> int:
    return next(iter(pool_arguments(pool).values()))


__all__ = [
    "FILES_LIMIT",
    "FILES_MARGIN",
    "FILES_MODELS",
    "FILES_SECONDS",
    "FilesSetup",
    "FilesTune",
    "files_models",
    "files_plan",
    "tune_files",
]
