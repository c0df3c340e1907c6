"""Where a variant in fewer bits (int8, fp16) loses its accuracy: each layer's share of the error.

Against fp32 (``--against fp32``) or the golden layers, every layer of a quantised model is off
by more than fp32's tolerance: each carries the error of the layers before it and adds its own,
so the first layer over the tolerance is simply the first layer. Instead the layers are ranked
by the error each adds (`error_shares`):

    added(t) = error/scale(t) - max(error/scale(s) for s in sources(t)),   at least 0
    share(t) = added(t) / the sum of added over the compared tensors

``sources(t)``: the nearest compared tensors that ``t``'s node reads, found by walking back
through tensors that have no reference (a Q/DQ pair, a weight's DequantizeLinear); a graph input
or an initializer brings no error, so the first layer's share holds the input's and its weights'
quantisation. The max, not a sum, of the sources: a tensor's error over its scale is what reaches
the next layer whichever branch brought it (an Add of two branches). A layer that averages error
down (a pooling) adds nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from onnxedge.runtime.parity.layer_compare import LayerResult


@dataclasses.dataclass(frozen=True)
class ErrorShare:
    """One compared tensor's part of the error: what it adds to what reached it."""

    layer: LayerResult
    added: float  # error/scale beyond its sources', at least 0
    share: float  # of the sum of added over every compared tensor, 0 to 1
    sources: tuple[str, ...]  # the compared tensors it reads (nearest)

    def to_dict(self) -> dict[str, Any]:
        finite = math.isfinite(self.added)
        return {
            "tensor": self.layer.tensor.name,
            "node": self.layer.tensor.node,
            "module": None if self.layer.module is None else self.layer.module.to_dict(),
            "scaled_error": self.layer.scaled_error if finite else None,
            "added": self.added if finite else None,
            "share": self.share,
            "sources": list(self.sources),
        }


def error_shares(layers: Sequence[LayerResult]) -> tuple[ErrorShare, ...]:
    """Each compared tensor of ``layers`` (in graph order) with its share, largest first."""
    made = {layer.tensor.name: layer for layer in layers}
    compared = {name for name, layer in made.items() if layer.compared}

    def sources(name: str, seen: set[str]) -> set[str]:
        found: set[str] = set()
        for source in made[name].tensor.inputs:
            if source in seen or source not in made:  # a graph input or an initializer
                continue
            seen.add(source)
            found |= {source} if source in compared else sources(source, seen)
        return found

    rows = []
    for layer in layers:
        if not layer.compared:
            continue
        reached = sorted(sources(layer.tensor.name, set()))
        before = max((made[s].scaled_error for s in reached), default=0.0)
        added = layer.scaled_error - before
        rows.append((layer, max(added, 0.0) if not math.isnan(added) else math.inf, reached))
    total = sum(added for _, added, _ in rows)
    shares = [
        ErrorShare(layer, added, _share(added, total), tuple(reached))
        for layer, added, reached in rows
    ]
    return tuple(sorted(shares, key=lambda s: (-s.share, s.layer.tensor.index)))


def _share(added: float, total: float) -> float:
    if not math.isfinite(total):
        return 1.0 if math.isinf(added) else 0.0
    return added / total if total > 0 else 0.0
