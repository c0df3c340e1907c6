"""The crop: which square of an image the model sees (``crop`` ``center-square`` and its
``crop_fraction``), and the fewest pixels a decode at a reduced scale may keep for it. Used by
`onnxedge.runtime.classifier.preprocess` (the exact and fast decodes), the fast decode's plan
(`onnxedge.runtime.classifier.fast_plan`) and training's crops."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from onnxedge.runtime.classifier.args import is_integer
from onnxedge.runtime.errors import ArgumentError


def target_size(spec: Any) -> tuple[int, int]:
    """``spec``'s ``resize`` as (height, width): a preprocessing spec (a manifest's) names it as
    two positive integers, else an `ArgumentError` that says so (not a KeyError deep inside)."""
    resize = spec.get("resize") if isinstance(spec, Mapping) else None
    if not (
        isinstance(resize, (list, tuple))
        and len(resize) == 2
        and all(is_integer(v) and v > 0 for v in resize)
    ):
        found = f"resize {resize!r}" if isinstance(spec, Mapping) else repr(spec)
        raise ArgumentError(
            f"expected a preprocessing spec (a manifest's) with resize [height, width], "
            f"found {found}"
        )
    return int(resize[0]), int(resize[1])


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
    side = max(target_size(spec))
    if spec.get("crop", "none") == "center-square":
        return math.ceil(side / crop_fraction(spec))
    return side


__all__ = ["center_square", "crop_fraction", "draft_side", "target_size"]
