"""Image preprocessing exactly as a bundle's manifest states it.

The golden images of `onnxedge export --images` and `onnxedge predict` both go through
`preprocess_image`, so what parity checks is what the device computes.

The manifest's ``preprocessing`` block (see `onnxedge.models.registry.SQUARE_CROP_64`):
``color`` RGB; ``crop`` ``center-square`` (the largest centred square) or ``none``; ``resize``
[H, W] with ``interpolation`` (a PIL resampling filter name); ``scale`` then ``mean``/``std`` per
channel; ``layout`` NCHW; ``dtype`` float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxedge.runtime.errors import OnnxEdgeError

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def to_rgb(image: Any) -> Any:
    """Convert any PIL mode to 8-bit RGB as a user would expect.

    Palette and LA/RGBA-like images are composited onto white (transparent pixels are not black);
    16-bit and 32-bit grayscale are scaled to 8 bits rather than clipped; CMYK goes through PIL.
    """
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        peak = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess_image(image: Any, spec: Mapping[str, Any]) -> np.ndarray:
    """A PIL image -> float32 array [C, H, W] as ``spec`` (the manifest's preprocessing) says."""
    from PIL import Image

    if spec.get("color", "RGB") != "RGB":
        raise OnnxEdgeError(f"unsupported preprocessing color {spec.get('color')!r}; expected RGB")
    image = to_rgb(image)
    crop = spec.get("crop", "none")
    if crop == "center-square":
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    elif crop != "none":
        raise OnnxEdgeError(f"unsupported preprocessing crop {crop!r}; expected center-square")
    height, width = (int(v) for v in spec["resize"])
    name = spec.get("interpolation", "bilinear")
    if name not in _INTERPOLATIONS:
        raise OnnxEdgeError(
            f"unsupported interpolation {name!r}; expected one of: {', '.join(_INTERPOLATIONS)}"
        )
    resample = getattr(Image.Resampling, name.upper())
    if image.size != (width, height):
        image = image.resize((width, height), resample=resample)
    array = np.asarray(image, dtype=np.float32) * np.float32(spec.get("scale", 1.0 / 255.0))
    mean = np.asarray(spec.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
    std = np.asarray(spec.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
    array = (array - mean) / std
    if spec.get("layout", "NCHW") != "NCHW":
        raise OnnxEdgeError(f"unsupported layout {spec.get('layout')!r}; expected NCHW")
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def load_image(path: Any, spec: Mapping[str, Any]) -> np.ndarray:
    """Open an image file and preprocess it; a file that is not a usable image is an
    `OnnxEdgeError` naming the file and what was wrong."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return preprocess_image(image, spec)
    except Image.DecompressionBombError as e:
        raise OnnxEdgeError(f"{path}: refused, the image is too large ({e})") from None
    except UnidentifiedImageError:
        raise OnnxEdgeError(
            f"{path}: expected an image file, found no image format PIL reads"
        ) from None
    except IsADirectoryError:
        raise OnnxEdgeError(f"{path}: expected an image file, found a directory") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise OnnxEdgeError(f"{path}: cannot read the image: {e}") from None
