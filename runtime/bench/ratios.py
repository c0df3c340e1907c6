"""ORT / PyTorch throughput ratios: every measured ORT row against every measured peer row of the
same device and batch size, in the matching mode."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from onnxedge.runtime.bench.engines import ORT, PEER_MODE, PYTORCH
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
