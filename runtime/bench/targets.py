"""ORT / PyTorch throughput ratios, and targets judged from the measured rows: MET, MISSED,
INDICATIVE (too few runs to judge) or NOT MEASURED (why)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from onnxedge.runtime.bench.engines import E2E, GRAPH, ORT, PEER_MODE, PYTORCH, RESIDENT
from onnxedge.runtime.bench.settings import MIN_RUNS_TO_JUDGE
from onnxedge.runtime.bench.timing import BenchRow


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
                and p.info.mode == PEER_MODE[o.info.mode]
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
