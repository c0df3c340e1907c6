"""Latency statistics of one engine at one batch size, from the seconds each timed call took."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILE_METHOD = "linear"  # numpy.percentile(method=...): interpolates between order statistics
THROUGHPUT_DEFINITION = "batch size / mean latency (images per second of back-to-back calls)"


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Latency of one engine at one batch size, from the seconds each timed call took.

    Percentiles use numpy's ``linear`` method; throughput is ``images_per_call / mean`` in
    images/s, where a call handles ``batch_size`` images (a from-files call: a whole folder).
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
    # Images one timed call handles: the batch size, or a whole folder for a from-files row.
    images_per_call: int = 0

    @classmethod
    def from_seconds(
        cls,
        samples: Sequence[float],
        *,
        batch_size: int,
        warmup: int = 0,
        images_per_call: int | None = None,
    ) -> LatencyStats:
        a = np.asarray(samples, dtype=np.float64)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"expected a non-empty list of latencies, found shape {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError("expected finite, non-negative latencies")
        if batch_size < 1:
            raise ValueError(f"expected a batch size >= 1, found {batch_size}")
        images = batch_size if images_per_call is None else images_per_call
        if images < 1:
            raise ValueError(f"expected images per call >= 1, found {images}")
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
            throughput=images / (mean / 1e3),
            images_per_call=images,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
