"""The crop: which square of an image the model sees (``crop`` ``center-square`` and its
``crop_fraction``), and the fewest pixels a decode at a reduced scale may keep for it. Used by
`onnxedge.runtime.classifier.preprocess` (the exact and fast decodes), the fast decode's plan
(`onnxedge.runtime.classifier.fast_plan`) and training's crops."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def center_square(width: int, height: int, fraction: float = 1.0) -> tuple[int, int, int, int]:
    """The ``center-square`` crop of a ``width`` x ``height`` image: the centred square whose side
    is ``fraction`` of the shorter side (1: the largest), as the box (left, top, right, bottom).
    A fraction of 0.875 before a resize to 224 is the geometry of ``Resize(256)`` then
    ``CenterCrop(224)`` (timm's ``crop_pct``), the crop taken before the resize."""
    side = min(width, height)
    if fraction != 1.0:
        side = max(1, round(side * fraction))
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def crop_fraction(spec: Mapping[str, Any]) -> float:
    """What the ``center-square`` crop keeps of the shorter side (``crop_fraction``; 1 where the
    manifest does not say)."""
    return float(spec.get("crop_fraction", 1.0))


def draft_side(spec: Mapping[str, Any]) -> int:
    """The fewest pixels the shorter side of a file may keep when decoded at a reduced scale:
    the model's larger side over what the crop keeps of it, so that neither the crop nor the
    resize ever enlarges."""
    side = max(int(v) for v in spec["resize"])
    if spec.get("crop", "none") == "center-square":
        return math.ceil(side / crop_fraction(spec))
    return side


__all__ = ["center_square", "crop_fraction", "draft_side"]
