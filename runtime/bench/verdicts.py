"""Targets judged from the measured rows: MET, MISSED (by how much), INDICATIVE (measured, but
from too few timed runs to judge) or NOT MEASURED (why)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from onnxedge.runtime.bench.settings import MIN_RUNS_TO_JUDGE
from onnxedge.runtime.bench.targets import RATIO, Side, Target, format_latency
from onnxedge.runtime.bench.timing import BenchRow

MET, MISSED, INDICATIVE, NOT_MEASURED = "met", "missed", "indicative", "not measured"


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """A target's outcome: ``met``, ``missed`` (by how much), ``indicative`` (measured, but from
    fewer than `MIN_RUNS_TO_JUDGE` timed runs: a figure, not a verdict) or ``not measured`` (why).
    Truthy only when met."""

    name: str
    description: str
    status: str  # MET | MISSED | INDICATIVE | NOT_MEASURED
    required: float
    unit: str  # "x" (ratio) or "ms" (p50 latency)
    measured: float | None
    batch_size: int | None
    detail: str
    target: str = ""  # the target's text, as given

    def __bool__(self) -> bool:
        return self.status == MET

    @property
    def missed_by(self) -> float | None:
        """How far off: required/measured for a ratio, measured/required for a latency."""
        if self.status != MISSED or self.measured is None:
            return None
        if self.unit == "x":
            return self.required / self.measured
        return self.measured / self.required

    def __str__(self) -> str:
        return f"{self.status.upper()} | {self.name} | {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "missed_by": self.missed_by}


def _matches(row: BenchRow, side: Side, device: str) -> bool:
    i = row.info
    return not i.tag and (i.engine, i.device, i.mode, i.variant, i.precision) == (
        side.engine,
        device,
        side.mode,
        side.variant,
        side.precision,
    )


def _find(rows: Sequence[BenchRow], side: Side, device: str, batch: int) -> BenchRow | None:
    return next((r for r in rows if _matches(r, side, device) and r.batch_size == batch), None)


def evaluate_target(
    target: Target, rows: Sequence[BenchRow], *, min_runs: int = MIN_RUNS_TO_JUDGE
) -> TargetResult:
    """Judge ``target`` from the rows: met or missed only when every row it uses has at least
    ``min_runs`` timed runs; from fewer, the figure is reported as ``indicative``."""
    ratio_target = target.kind == RATIO

    def result(status: str, detail: str, measured: float | None = None, batch=None):
        return TargetResult(
            target.name,
            target.description,
            status,
            target.required,
            "x" if ratio_target else "ms",
            measured,
            batch,
            detail,
            target.text,
        )

    batch = target.batch_size
    if batch is None:
        measured_at = [
            {r.batch_size for r in rows if r and _matches(r, side, target.device)}
            for side in target.sides
        ]
        common = set.intersection(*measured_at)
        if not common:
            return result(NOT_MEASURED, _why_missing(rows, target, None))
        batch = max(common)
    found = [_find(rows, side, target.device, batch) for side in target.sides]
    if not all(r and r.stats is not None for r in found):
        return result(NOT_MEASURED, _why_missing(rows, target, batch), batch=batch)
    stats = [r.stats for r in found if r is not None and r.stats is not None]
    runs = min(s.runs for s in stats)
    too_few = f"not enough runs to judge ({runs} < {min_runs})" if runs < min_runs else ""
    if not ratio_target:
        p50 = stats[0].p50_ms
        got = format_latency(p50, target.unit)
        want = format_latency(target.required, target.unit)
        if too_few:
            return result(
                INDICATIVE, f"{too_few}: p50 {got} against ≤ {want} at batch {batch}", p50, batch
            )
        if p50 <= target.required:
            return result(MET, f"p50 {got} ≤ {want} at batch {batch}", p50, batch)
        return result(
            MISSED,
            f"missed by {p50 / target.required:.2f}×: p50 {got}, required ≤ {want} at batch "
            f"{batch}",
            p50,
            batch,
        )
    assert target.right is not None
    ratio = stats[0].throughput / stats[1].throughput
    left, right = (r.info.short for r in found if r is not None)
    figures = (
        f"{left} {stats[0].throughput:,.0f} img/s, {right} {stats[1].throughput:,.0f} img/s at "
        f"batch {batch}"
    )
    if too_few:
        return result(
            INDICATIVE,
            f"{too_few}: {ratio:.2f}× against ≥ {target.required:g}× ({figures})",
            ratio,
            batch,
        )
    if ratio >= target.required:
        return result(MET, f"{ratio:.2f}× ≥ {target.required:g}× ({figures})", ratio, batch)
    return result(
        MISSED,
        f"missed by {target.required / ratio:.2f}×: {ratio:.2f}×, required ≥ "
        f"{target.required:g}× ({figures})",
        ratio,
        batch,
    )


def _why_missing(rows: Sequence[BenchRow], target: Target, batch: int | None) -> str:
    for side in target.sides:
        label = side.label(target.device)
        candidates = [
            r
            for r in rows
            if _matches(r, side, target.device) and (batch is None or r.batch_size == batch)
        ]
        if not candidates:
            where = f"at batch {batch}" if batch is not None else ""
            if not any(r.info.variant == side.variant for r in rows):
                return (
                    f"no {label} row {where}: this run timed no {side.variant} model (the bundle "
                    f"has no {side.variant} variant, or --variants left it out)"
                )
            return f"no {label} row {where}".rstrip() + " in this run"
        bad = next((r for r in candidates if not r), None)
        if bad is not None:
            return f"{label} {bad.status}: {bad.reason}"
    return "not measured in this run"


def evaluate_targets(
    rows: Sequence[BenchRow], targets: Sequence[Target], *, min_runs: int = MIN_RUNS_TO_JUDGE
) -> list[TargetResult]:
    return [evaluate_target(t, rows, min_runs=min_runs) for t in targets]
