"""A timed setup as `onnxedge tune` reports it (`TuneRow`), for the model alone (`TunedSetup`)
or from files (`FilesSetup`), and bench's rows made into them (`tune_rows`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from onnxedge.runtime.bench import BenchRow, LatencyStats
from onnxedge.runtime.tune.setup import FilesSetup, TunedSetup

Setup = TunedSetup | FilesSetup


@dataclasses.dataclass(frozen=True)
class TuneRow:
    """One setup at one batch size: ``ok`` with its figures (from files, images/s = files / mean
    pass time and p50 per pass), or ``failed``/``skipped`` with the reason; ``vs_default`` is
    its throughput over the default setup's at that batch size."""

    setup: Setup
    batch_size: int
    status: str
    reason: str = ""
    check: str = ""
    stats: LatencyStats | None = None
    vs_default: float | None = None

    def __bool__(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.setup.to_dict(),
            "batch_size": self.batch_size,
            "status": self.status,
            "reason": self.reason,
            "check": self.check,
            "throughput": self.stats.throughput if self.stats else None,
            "p50_ms": self.stats.p50_ms if self.stats else None,
            "runs": self.stats.runs if self.stats else None,
            "vs_default": self.vs_default,
        }


def tune_rows(
    rows: Sequence[BenchRow], setups: Mapping[int, Setup], default: Setup
) -> tuple[TuneRow, ...]:
    """Bench's rows as tune's, each with its setup (``setups``, by ``id`` of the row's
    `EngineInfo`), compared with ``default`` (`compared`)."""
    made = [
        TuneRow(setups[id(r.info)], r.batch_size, r.status, r.reason, r.check, r.stats)
        for r in rows
    ]
    return compared(made, default)


def compared(rows: Sequence[TuneRow], default: Setup) -> tuple[TuneRow, ...]:
    """``rows``, each measured one with ``vs_default``: its throughput over ``default``'s row's
    at the same batch size, where that was measured."""
    baseline = {
        r.batch_size: r.stats.throughput for r in rows if r and r.stats and r.setup == default
    }
    return tuple(
        dataclasses.replace(r, vs_default=r.stats.throughput / baseline[r.batch_size])
        if r.stats is not None and baseline.get(r.batch_size)
        else r
        for r in rows
    )


__all__ = ["Setup", "TuneRow", "compared", "tune_rows"]
