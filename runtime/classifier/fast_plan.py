"""The steps after simplejpeg (either decode), planned once for a preprocessing
(`onnxedge.runtime.classifier.files.FileLoader` runs them): `load_pixels`' pixels at about a fifth
less CPU a file, where ``load_pixels`` reads and checks the spec again for every file."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxedge.runtime.classifier.crop import center_square, crop_fraction, draft_side, target_size
from onnxedge.runtime.classifier.preprocess import (
    INTERPOLATIONS,
    pads,
)


@dataclasses.dataclass(frozen=True)
class FastPlan:
    """The steps after simplejpeg (the fast decode's reduced scale or the exact one's full size)
    for a preprocessing without options that need
    `_upright_pixels`' checks (RGB, NCHW, a stretching resize, a known interpolation, RGB or BGR
    order), read from the spec once instead of for every file: the center-square crop as a
    slice of the decoded array, Pillow's resize, the channel order. The same pixels as
    `load_pixels` (`fast_plan`)."""

    side: int  # `draft_side`
    size: tuple[int, int]  # the model's (width, height)
    resample: int
    crop: bool
    bgr: bool
    fraction: float = 1.0  # what the crop keeps of the shorter side (`crop_fraction`)

    def pixels(self, array: np.ndarray) -> np.ndarray:
        """simplejpeg's RGB array [h, w, 3] -> the uint8 pixels `load_pixels` gives."""
        from PIL import Image

        if self.crop:
            left, top, right, bottom = center_square(array.shape[1], array.shape[0], self.fraction)
            array = array[top:bottom, left:right]
        image = Image.fromarray(array)
        if image.size != self.size:
            image = image.resize(self.size, resample=self.resample)
        pixels = np.asarray(image)
        return pixels[..., ::-1] if self.bgr else pixels


def fast_plan(spec: Mapping[str, Any]) -> FastPlan | None:
    """`FastPlan` for ``spec``, or None where its options take `_upright_pixels` (grayscale, a
    padding resize, anything it would refuse)."""
    from PIL import Image

    crop = spec.get("crop", "none")
    interpolation = spec.get("interpolation", "bilinear")
    order = spec.get("channel_order", "RGB")
    if (
        spec.get("color", "RGB") != "RGB"
        or spec.get("layout", "NCHW") != "NCHW"
        or pads(spec)
        or crop not in ("center-square", "none")
        or interpolation not in INTERPOLATIONS
        or order not in ("RGB", "BGR")
    ):
        return None
    height, width = target_size(spec)
    resample = getattr(Image.Resampling, interpolation.upper())
    return FastPlan(
        draft_side(spec),
        (width, height),
        resample,
        crop != "none",
        order == "BGR",
        crop_fraction(spec),
    )


__all__ = ["FastPlan", "fast_plan"]
