"""The timed loop: every engine at every batch size, interleaved in rounds as
`onnxedge.runtime.bench` describes, each output checked against the reference engine first."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from onnxedge.runtime.bench.engines import AnyEngine, Engine, EngineInfo, Runner, SkippedEngine
from onnxedge.runtime.bench.models import scaled_atol
from onnxedge.runtime.bench.settings import UNTIMED_PER_ROUND, BenchSettings
from onnxedge.runtime.bench.stats import LatencyStats
from onnxedge.runtime.compare import compare_arrays
from onnxedge.runtime.errors import first_line
from onnxedge.runtime.variants.manifest import FP32

log = logging.getLogger(__name__)


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
            "variant": i.variant,
            "precision": i.precision,
            "decode": i.decode,
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
    """Time every engine at every batch size, interleaved as the module docstring says. An
    engine with its own ``batch_sizes`` (a from-files engine) runs at those only, which join the
    run's; one with ``compare_with_reference`` False checks itself (``runner.self_check()``)
    instead of being compared with the reference engine, and never is the reference."""
    plan = settings.plan
    per_engine = 1 + plan.effective_rounds
    batches = list(dict.fromkeys([*settings.batch_sizes, *sorted(_own_batches(engines, settings))]))
    total = sum(
        per_engine
        for batch in batches
        for e in engines
        if not isinstance(e, SkippedEngine) and _runs_at(e, batch, settings)
    )
    done = 0

    def step(desc: str, n: int = 1) -> None:
        nonlocal done
        done += n
        if on_progress:
            on_progress(desc, done, total)

    rows: list[BenchRow] = []
    for batch in batches:
        here = [e for e in engines if _runs_at(e, batch, settings)]
        runnable = [e for e in here if not isinstance(e, SkippedEngine)]
        x = make_input(input_shape, batch, settings.seed)
        results: dict[int, BenchRow] = {}
        active: list[_Active] = []
        # One reference per numerics (`BenchModel.reference_key`): the first engine
        # to run on fp32 numerics, on int8 numerics, ... (ORT's CPU EP when it is in the run).
        references: dict[str, tuple[np.ndarray, str]] = {}
        for engine in runnable:
            label = engine.info.label
            if on_progress:
                # torch.compile's first call compiles (seconds to minutes): the bar says so.
                note = getattr(engine, "warmup_note", "") or "warm-up"
                on_progress(f"batch {batch} · {label} · {note}", done, total)
            runner: Runner | None = None
            warm = max(plan.warmup, getattr(engine, "min_warmup", 0))
            own_check = not getattr(engine, "compare_with_reference", True)
            try:
                runner = engine.prepare(x)
                for _ in range(warm):
                    runner.run()
                out = runner.output()
                if own_check:
                    passed, check = runner.self_check()  # type: ignore[attr-defined]
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
            if own_check:
                if not passed:
                    _close(runner)
                    results[id(engine)] = BenchRow(
                        engine.info,
                        batch,
                        "failed",
                        f"{check}; not timed",
                        check=f"FAILED: {check}",
                        extras=dict(runner.extras),
                    )
                    step(label, per_engine)
                    continue
            elif (key := getattr(engine, "reference_key", FP32)) not in references:
                references[key] = (out, label)
                check = "reference" if key == FP32 else f"reference for {key} models"
            else:
                reference, reference_label = references[key]
                # An engine computing in fewer bits (int8, bf16) states its own atol, at the
                # output's scale (`scaled_atol`: logits are not probabilities).
                low = getattr(engine, "check_atol", None)
                atol = scaled_atol(low, reference) if low else settings.check_atol
                cmp = compare_arrays(out, reference, atol=atol, rtol=settings.rtol)
                if not cmp:
                    detail = cmp.detail or f"max abs error {cmp.max_abs_error:.3g}"
                    _close(runner)
                    results[id(engine)] = BenchRow(
                        engine.info,
                        batch,
                        "failed",
                        f"output differs from {reference_label}: {detail} "
                        f"(atol {atol:g}, rtol {settings.rtol:g}); not timed",
                        check=f"FAILED vs {reference_label}: {detail}",
                        extras=dict(runner.extras),
                    )
                    step(label, per_engine)
                    continue
                check = (
                    f"PASSED vs {reference_label}: max abs error {cmp.max_abs_error:.2g} "
                    f"(atol {atol:g})"
                )
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
                    for _ in range(UNTIMED_PER_ROUND):
                        item.runner.run()
                    item.untimed += UNTIMED_PER_ROUND
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
            stats = LatencyStats.from_seconds(
                item.samples,
                batch_size=batch,
                warmup=item.untimed,
                images_per_call=getattr(item.runner, "images_per_call", batch),
            )
            results[id(item.engine)] = BenchRow(
                item.engine.info,
                batch,
                "ok",
                stats=stats,
                check=item.check,
                extras=dict(item.runner.extras),
            )
            _close(item.runner)
        for engine in here:
            if isinstance(engine, SkippedEngine):
                rows.append(BenchRow(engine.info, batch, "skipped", engine.reason))
            else:
                rows.append(results[id(engine)])
    return rows


def _own_batches(engines: Sequence[AnyEngine], settings: BenchSettings) -> set[int]:
    return {b for e in engines for b in (getattr(e, "batch_sizes", None) or ())}


def _runs_at(engine: AnyEngine, batch: int, settings: BenchSettings) -> bool:
    """Whether ``engine`` has a row at ``batch``: at its own batch sizes where it has them, else
    at the run's."""
    own = getattr(engine, "batch_sizes", None)
    return batch in own if own else batch in settings.batch_sizes


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
