"""Throughput ratios: ORT / PyTorch (every measured fp32 ORT row against every measured peer row
of the same device and batch size, in the matching mode), and every other engine and model
against ORT's fp32 row of the same device, mode and batch size (`compute_engine_ratios`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from onnxedge.runtime.bench.engines import ORT, PEER_MODE, PYTORCH
from onnxedge.runtime.bench.timing import BenchRow
from onnxedge.runtime.variants.manifest import FP32


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
        if not o or o.info.family != ORT or o.stats is None or not _is_fp32(o):
            continue
        for p in rows:
            if (
                p
                and p.stats is not None
                and p.info.family == PYTORCH
                and p.batch_size == o.batch_size
                and p.info.device == o.info.device
                and p.info.mode == PEER_MODE.get(o.info.mode)
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


def _is_fp32(row: BenchRow) -> bool:
    return row.info.variant == FP32 and not row.info.precision and not row.info.tag


@dataclasses.dataclass(frozen=True)
class EngineRatio:
    """A row's throughput over ONNX Runtime's fp32 row (``onnxruntime``, the bundle's
    ``model.onnx``) of the same device, mode and batch size, in the same run."""

    batch_size: int
    mode: str
    row: str  # the row's label
    reference: str  # ORT fp32's label
    ratio: float  # row throughput / ORT fp32 throughput
    p50_ratio: float  # ORT fp32 p50 / row p50

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compute_engine_ratios(rows: Sequence[BenchRow]) -> list[EngineRatio]:
    """Every measured row other than ORT fp32 and the PyTorch peers (other variants, other
    engines, other precisions) against ORT's fp32 row of the same device, mode and batch size:
    ``onnxruntime int8`` / ``onnxruntime``, ``openvino int8`` / ``onnxruntime``, and the same for
    the from-files rows."""
    out = []
    for ref in rows:
        if not ref or ref.stats is None or ref.info.engine != ORT or not _is_fp32(ref):
            continue
        for r in rows:
            if (
                r
                and r is not ref
                and r.stats is not None
                and r.info.family != PYTORCH
                and (r.info.device, r.info.mode, r.batch_size)
                == (ref.info.device, ref.info.mode, ref.batch_size)
            ):
                out.append(
                    EngineRatio(
                        ref.batch_size,
                        ref.info.mode,
                        r.info.label,
                        ref.info.label,
                        r.stats.throughput / ref.stats.throughput,
                        ref.stats.p50_ms / r.stats.p50_ms,
                    )
                )
    return out
