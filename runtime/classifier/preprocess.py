"""Image preprocessing exactly as a bundle's manifest states it.

The golden images of `onnxedge export --images`, `onnxedge parity` and `onnxedge predict` all go
through `load_image` / `preprocess_image`, so what parity checks is what the device computes.

The manifest's ``preprocessing`` block (see `onnxedge.models.registry.SQUARE_CROP_64`):
``color`` RGB, or L (one channel: PIL's 8-bit grayscale of the RGB image, ITU-R 601-2 luma);
``crop`` ``center-square`` (the largest centred square) or ``none``; ``resize`` [H, W] with
``interpolation`` (a PIL resampling filter name) and ``resize_mode`` (`RESIZE_MODES`, default
``stretch``); ``scale`` then ``mean``/``std`` per channel; ``pad_value``, the value of the padded
pixels of the model's input (after the normalisation; default 0); ``channel_order`` RGB (default)
or BGR, the order the model takes its channels in (``mean`` and ``std`` are in that order);
``layout`` NCHW; ``dtype`` float32.

The resize modes (integer arithmetic, so every path computes the same sizes):

1. ``stretch``: to H x W, the aspect ratio not kept.
2. ``pad-right``: to height H keeping the aspect ratio, the width ``ceil(H * w / h)`` at most W,
   the rest on the right padded (as OCR text-line classifiers are fed).
3. ``letterbox``: the largest size within H x W that keeps the aspect ratio (the long side
   rounded half up), centred, the rest padded (left and top take the smaller half).

Decisions that the manifest does not spell out, the same on every path (see docs/RUNTIME.md):

1. EXIF orientation is applied (`PIL.ImageOps.exif_transpose`): a phone photo taken upright is
   classified upright.
2. Every PIL mode becomes 8-bit RGB as a user would expect (`to_rgb`): transparency is composited
   onto white; 16-bit and 32-bit grayscale are scaled, not clipped; CMYK goes through PIL.
   ICC profiles are not applied (as PIL and torchvision do not when the model was trained).
3. Animated or multi-frame files: the first frame.
4. Files are refused, not half-loaded: truncated data is an error (PIL's
   ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False), and so is an image of more than `MAX_PIXELS`
   pixels (a decompression bomb for a 64x64 model), checked from the header before decoding.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.classifier.args import check_max_pixels
from onnxedge.runtime.classifier.crop import center_square, crop_fraction, draft_side, target_size
from onnxedge.runtime.classifier.fast_jpeg import draft_scale, load_scaled
from onnxedge.runtime.errors import ArgumentError, ImageReadError, OnnxEdgeError, first_line

log = logging.getLogger(__name__)

# The largest image `load_image` decodes: 64 megapixels, about 192 MB as 8-bit RGB. A 64x64 model
# gains nothing from more, and PIL's own guard only warns at 89 MP and refuses at 179 MP.
MAX_PIXELS = 64_000_000

# File name endings `onnxedge predict` treats as images when it walks a directory.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",  # a browser's name for a JPEG saved from the web
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)

# How files become pixels (`load_pixels`): exactly as the training transform, or faster.
EXACT = "exact"
FAST = "fast"
DECODES = (EXACT, FAST)

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
RESIZE_MODES = ("stretch", "pad-right", "letterbox")
_ORIENTATION = 0x0112  # the EXIF tag
_HIGH_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_WITH_ALPHA = ("RGBA", "LA", "RGBa", "La", "PA")


def to_rgb(image: Any) -> Any:
    """Convert any PIL mode to 8-bit RGB as a user would expect.

    1. ``RGB`` without transparency: unchanged.
    2. ``I;16*`` (16-bit grayscale): scaled by 255/65535. ``I`` (32-bit): the same when any value
       exceeds 255 (16-bit data, as TIFF and old PIL deliver it), else taken as 8-bit.
       ``F``: [0, 1] data scaled by 255 when its maximum is at most 1, else taken as 0..255;
       NaN becomes 0. A grayscale transparency colour becomes white.
    3. Palette, alpha modes and ``L``/``RGB`` with a transparency colour: composited onto white,
       so transparent pixels are white, not black (or whatever colour they hide).
    4. Everything else (``1``, ``L``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``): PIL's conversion.
    """
    from PIL import Image

    mode = image.mode
    has_trns = "transparency" in image.info
    if mode == "RGB" and not has_trns:  # 1.
        return image
    if mode in _HIGH_BIT_GRAY or mode == "F":  # 2.
        gray = _gray_to_8bit(image)
        trns = image.info.get("transparency")
        if isinstance(trns, (int, float)) and not isinstance(trns, bool):
            transparent = np.asarray(image) == trns
            gray = np.where(transparent, np.uint8(255), gray)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P" or mode in _WITH_ALPHA or has_trns:  # 3.
        # PIL converts premultiplied La to nothing but LA
        rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # 4.


def _gray_to_8bit(image: Any) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        array = np.nan_to_num(array, nan=0.0, posinf=255.0, neginf=0.0)
        peak = 1.0 if array.max(initial=0.0) <= 1.0 else 255.0
    elif image.mode.startswith("I;16") or array.max(initial=0.0) > 255:
        peak = 65535.0
    else:
        peak = 255.0
    return np.clip(np.floor(array / peak * 255.0 + 0.5), 0, 255).astype(np.uint8)


def exif_upright(image: Any) -> Any:
    """The image turned as its EXIF orientation tag says (a copy), or the image itself."""
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block: PIL raises many types; the pixels are still fine
        log.debug("ignoring an unreadable EXIF block", exc_info=True)
        return image
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        from PIL import ImageOps

        return ImageOps.exif_transpose(image)
    return image


def preprocess_image(image: Any, spec: Mapping[str, Any]) -> np.ndarray:
    """A PIL image -> float32 array [C, H, W] as ``spec`` (the manifest's preprocessing) says.

    EXIF orientation is applied, then `to_rgb` (and grayscale for ``color`` L), the crop, the
    resize (its mode), the scaling, the padding: `finish` of `image_pixels`.
    """
    return finish(image_pixels(image, spec), spec)


def image_pixels(
    image: Any, spec: Mapping[str, Any], *, max_pixels: int | None = None
) -> np.ndarray:
    """A PIL image -> uint8 array [h, w, C] as ``spec`` says, before the scaling and the padding:
    EXIF orientation, `to_rgb`, the crop, the resize and the channel order. [h, w] is the model's
    size unless its ``resize_mode`` pads (`pads`). `finish` of it is `preprocess_image`'s array,
    bit for bit. An empty, closed or truncated image (PIL reads a file lazily) is an
    `ImageReadError` naming it (its file, where it has one), not PIL's exception; so is one of
    more than ``max_pixels`` pixels (None: no limit), refused before PIL decodes it."""
    name = getattr(image, "filename", "") or f"<PIL image {image.mode} {image.size}>"
    if 0 in tuple(image.size):
        raise ImageReadError(name, "expected an image with pixels, found {}x{}".format(*image.size))
    if max_pixels is not None and image.size[0] * image.size[1] > max_pixels:
        raise ImageReadError(name, _too_large(*image.size, max_pixels))
    try:
        return _upright_pixels(to_rgb(exif_upright(image)), spec)
    except OnnxEdgeError:
        raise
    except (OSError, ValueError, SyntaxError) as e:  # PIL's: truncated, closed, a mode it lacks
        raise ImageReadError(name, f"cannot use the image: {first_line(e)}") from None


def _upright_pixels(image: Any, spec: Mapping[str, Any]) -> np.ndarray:
    """`image_pixels` of an image already upright and RGB (`open_image`'s)."""
    from PIL import Image

    height, width = target_size(spec)
    color = spec.get("color", "RGB")
    if color not in ("RGB", "L"):
        raise OnnxEdgeError(f"unsupported preprocessing color {color!r}; expected RGB or L")
    if spec.get("layout", "NCHW") != "NCHW":
        raise OnnxEdgeError(f"unsupported layout {spec.get('layout')!r}; expected NCHW")
    if color == "L":
        image = image.convert("L")
    crop = spec.get("crop", "none")
    if crop == "center-square":
        image = image.crop(center_square(*image.size, crop_fraction(spec)))
    elif crop != "none":
        raise OnnxEdgeError(f"unsupported preprocessing crop {crop!r}; expected center-square")
    name = spec.get("interpolation", "bilinear")
    if name not in INTERPOLATIONS:
        raise OnnxEdgeError(
            f"unsupported interpolation {name!r}; expected one of: {', '.join(INTERPOLATIONS)}"
        )
    resample = getattr(Image.Resampling, name.upper())
    (inner_w, inner_h), _ = resized_box(image.size, (height, width), spec)
    if image.size != (inner_w, inner_h):
        image = image.resize((inner_w, inner_h), resample=resample)
    pixels = np.asarray(image)
    if color == "L":
        pixels = pixels[..., None]
    order = spec.get("channel_order", "RGB")
    if order == "BGR":  # a model trained on OpenCV's channel order
        pixels = pixels[..., ::-1]
    elif order != "RGB":
        raise OnnxEdgeError(f"unsupported channel_order {order!r}; expected RGB or BGR")
    return pixels


def pads(spec: Mapping[str, Any]) -> bool:
    """Whether ``spec``'s ``resize_mode`` pads (the pixels of `image_pixels` then have each their
    own size, and the padding is added after the scaling, by `finish`)."""
    return spec.get("resize_mode", "stretch") != "stretch"


def finish(pixels: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """One image's uint8 pixels [h, w, C] (`image_pixels`) -> the model's float32 [C, H, W]:
    `normalize`, then the padding where ``resize_mode`` pads (``pad_value``, after the
    normalisation)."""
    array = normalize(pixels, spec)
    height, width = target_size(spec)
    inner_h, inner_w = array.shape[-2:]
    if (inner_w, inner_h) == (width, height):
        return array
    left, top = (0, 0)  # pad-right
    if spec.get("resize_mode") == "letterbox":  # centred, as `resized_box` places it
        left, top = (width - inner_w) // 2, (height - inner_h) // 2
    canvas = np.full(
        (array.shape[0], height, width), np.float32(spec.get("pad_value", 0.0)), dtype=np.float32
    )
    canvas[:, top : top + inner_h, left : left + inner_w] = array
    return canvas


def resized_box(
    size: tuple[int, int], target: tuple[int, int], spec: Mapping[str, Any]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where an image of ``size`` (width, height) goes in the ``target`` (height, width) input:
    its (width, height) after the resize, and its (left, top) offset; the modes of the module
    docstring, in integers."""
    w, h = size
    height, width = target
    mode = spec.get("resize_mode", "stretch")
    if mode == "stretch":  # 1.
        return (width, height), (0, 0)
    if mode == "pad-right":  # 2.
        return (min(width, max(1, -(-height * w // h))), height), (0, 0)
    if mode == "letterbox":  # 3.
        if height * w <= width * h:  # the height limits
            inner = (min(width, max(1, (2 * w * height + h) // (2 * h))), height)
        else:
            inner = (width, min(height, max(1, (2 * h * width + w) // (2 * w))))
        return inner, ((width - inner[0]) // 2, (height - inner[1]) // 2)
    raise OnnxEdgeError(
        f"unsupported resize_mode {mode!r}; expected one of: {', '.join(RESIZE_MODES)}"
    )


def normalize(pixels: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """Pixels [..., H, W, C] (uint8, or float in 0..255) -> float32 [..., C, H, W]: ``scale``,
    then ``(x - mean) / std`` per channel, in float32, as ``spec`` (the manifest's
    preprocessing) says. The last step of `preprocess_image`, and how parity's random golden rows
    are made from continuous pixel values.

    uint8 pixels are scaled channel by channel straight into the planar output, with the same
    float32 operations in the same order (each correctly rounded, so the same bits), without
    the float32 [..., H, W, C] copy and the transpose after it: about 1 ms for a batch of 64
    64x64 images, where a table lookup (``np.take``) took 2 to 10."""
    channels = 1 if spec.get("color", "RGB") == "L" else 3
    scale = np.float32(spec.get("scale", 1.0 / 255.0))
    mean = np.asarray(spec.get("mean", [0.0] * channels), dtype=np.float32)
    std = np.asarray(spec.get("std", [1.0] * channels), dtype=np.float32)
    if isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim >= 3:
        mean, std = np.broadcast_arrays(mean.reshape(-1), std.reshape(-1))
        if pixels.shape[-1] != len(mean):
            raise OnnxEdgeError(
                f"expected {len(mean)} channels as the preprocessing's mean and std have, "
                f"found {pixels.shape[-1]}"
            )
        planar = np.moveaxis(pixels, -1, -3)
        out = np.empty(planar.shape, dtype=np.float32)
        for c in range(len(mean)):
            plane = out[..., c, :, :]
            np.multiply(planar[..., c, :, :], scale, out=plane, dtype=np.float32)
            if mean[c] != 0:  # x - 0 and x / 1 are x, bit for bit: two passes saved
                np.subtract(plane, mean[c], out=plane)
            if std[c] != 1:
                np.divide(plane, std[c], out=plane)
        return out
    array = np.asarray(pixels, dtype=np.float32) * scale
    array = (array - mean) / std
    return np.ascontiguousarray(np.moveaxis(array, -1, -3), dtype=np.float32)


def load_image(
    path: Any,
    spec: Mapping[str, Any],
    *,
    max_pixels: int | None = MAX_PIXELS,
    decode: str = EXACT,
) -> np.ndarray:
    """Open an image file and preprocess it -> float32 array [C, H, W]: `finish` of
    `load_pixels`.

    A file that is not a usable image is an `ImageReadError` (an `OnnxEdgeError`) naming the file
    and what was wrong: missing, not a regular file, empty, not an image, truncated, more than
    ``max_pixels`` pixels (None: only PIL's own limit), or in a mode that cannot become RGB.
    """
    return finish(load_pixels(path, spec, max_pixels=max_pixels, decode=decode), spec)


def load_pixels(
    path: Any,
    spec: Mapping[str, Any],
    *,
    max_pixels: int | None = MAX_PIXELS,
    decode: str = EXACT,
) -> np.ndarray:
    """Open an image file and make its uint8 pixels [H, W, C] as ``spec`` says, before the
    scaling (`image_pixels`); refused as `load_image` says.

    ``decode``: ``exact`` (`EXACT`) gives the pixels of `preprocess_image`, the training
    transform's, bit for bit. ``fast`` (`FAST`) lets libjpeg decode a JPEG at 1/2, 1/4 or 1/8 of
    its size (Pillow's ``Image.draft``, a DCT-domain reduction) when what the crop keeps is still
    at least the model's size at that scale, then crops and resizes as ``exact`` does: about half
    the decode's and the resize's work for CelebA's 178x218 into 64x64, with pixels that differ
    slightly (gated: docs/RUNTIME.md). Every other file, and a JPEG too small to reduce, takes
    the exact path. Where simplejpeg is installed, a plain JPEG named so is decoded by it with
    either decode (`onnxedge.runtime.classifier.fast_jpeg`): the same pixels as Pillow's, at
    less CPU.
    """
    max_pixels = check_max_pixels(max_pixels)
    target = draft_side(spec) if check_decode(decode) == FAST else None
    array = load_scaled(path, target, max_pixels)
    if array is not None:
        from PIL import Image

        return _upright_pixels(Image.fromarray(array), spec)
    return pillow_pixels(path, spec, max_pixels=max_pixels, draft_side=target)


def pillow_pixels(
    path: Any, spec: Mapping[str, Any], *, max_pixels: int | None, draft_side: int | None
) -> np.ndarray:
    """`load_pixels` through Pillow alone (``draft_side``: `draft_side` for the fast decode,
    None for the exact one)."""
    return _upright_pixels(open_image(path, max_pixels=max_pixels, draft_side=draft_side), spec)


def check_decode(decode: Any) -> str:
    """``decode`` if it is one of `DECODES`, else an `ArgumentError` (a `ValueError` and an
    `OnnxEdgeError`) naming them."""
    if decode not in DECODES:
        raise ArgumentError(f"unknown decode {decode!r}; expected one of: {', '.join(DECODES)}")
    return str(decode)


def trained_decode(spec: Mapping[str, Any]) -> str:
    """The decode a bundle's model was trained with: its preprocessing's ``decode`` (written by
    `onnxedge export` from the checkpoint), ``exact`` where it names none."""
    decode = spec.get("decode", EXACT)
    if decode not in DECODES:
        raise OnnxEdgeError(
            f"the manifest's preprocessing: expected decode {' or '.join(DECODES)}, found "
            f"{decode!r}"
        )
    return str(decode)


def fast_decode_vouched(manifest: Mapping[str, Any]) -> bool:
    """Whether ``fast`` decoding is vouched for on a bundle: its model was trained on it, or its
    manifest's ``decodes`` block records a passed gate (`onnxedge optimize --fast-decode`)."""
    spec = manifest.get("preprocessing")
    if isinstance(spec, Mapping) and spec.get("decode") == FAST:
        return True
    block = manifest.get("decodes")
    entry = block.get(FAST) if isinstance(block, Mapping) else None
    return isinstance(entry, Mapping) and entry.get("gated") is True


def _draft(image: Any, side: int) -> None:
    """Ask libjpeg for `fast_jpeg.draft_scale`'s reduction; nothing for other formats, or when
    none does."""
    if image.format != "JPEG":
        return
    width, height = image.size
    scale = draft_scale(width, height, side)
    if scale is not None:
        image.draft(image.mode, (width // scale, height // scale))


def open_image(
    path: Any, *, max_pixels: int | None = MAX_PIXELS, draft_side: int | None = None
) -> Any:
    """Open an image file as an upright 8-bit RGB PIL image, refused as `load_image` says. The
    training side crops it at random before `preprocess_image`; everything else uses
    `load_image`. ``draft_side``: a JPEG may be decoded at a reduced scale that keeps its shorter
    side at least this many pixels (`load_pixels`' ``fast``); None: at full size.
    """
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Process-wide in PIL: with it, a truncated file loads with its missing rows black.
        raise OnnxEdgeError(
            "PIL's ImageFile.LOAD_TRUNCATED_IMAGES is True in this process: truncated images "
            "would load with missing rows; expected it False (PIL's default)"
        )
    _check_regular_file(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageReadError(path, _too_large(width, height, max_pixels))
            if draft_side is not None:
                _draft(image, draft_side)
            image.load()
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL's own guard, from the header: an error above 2x Image.MAX_IMAGE_PIXELS, and a
        # warning above 1x that callers (the predict command) may turn into an error. Said
        # with our limit, which is the one the user can change.
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        if max_pixels is None or pixels is None:
            raise ImageReadError(path, f"refused as a decompression bomb: {e}") from None
        raise ImageReadError(
            path,
            f"refused as a decompression bomb: {int(pixels.group(1)):,} pixels, more than the "
            f"limit of {max_pixels:,} ({_OPTION})",
        ) from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(path, "expected an image file, found no format PIL reads") from None
    except OSError as e:  # a file that cannot be opened (the error names it), truncated data, ...
        what = "cannot read" if e.filename is not None else "cannot decode the image"
        raise ImageReadError(path, f"{what}: {e.strerror or e}") from None
    except Exception as e:  # PIL's decoders raise SyntaxError, ValueError, struct.error, ...
        raise ImageReadError(
            path, f"cannot decode the image: {type(e).__name__}: {first_line(e)}"
        ) from None
    try:
        rgb = to_rgb(exif_upright(image))
    except (ValueError, OSError) as e:  # a mode PIL cannot convert
        raise ImageReadError(
            path, f"cannot convert the {image.mode} image to RGB: {first_line(e)}"
        ) from None
    return rgb


_OPTION = "onnxedge predict --max-pixels"


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return (
        f"refused: {width}x{height} is {width * height:,} pixels, more than the limit of "
        f"{max_pixels:,} ({_OPTION})"
    )


def _check_regular_file(path: Any) -> None:
    """Only regular files are opened: a FIFO named like an image would block forever."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        return  # a file object: the caller opened it
    try:
        st = os.stat(path)
    except FileNotFoundError:
        found = "a symbolic link to nothing" if os.path.islink(path) else "nothing there"
        raise ImageReadError(path, f"expected an image file, found {found}") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot read: {e.strerror or e}") from None
    except UnicodeEncodeError as e:  # a lone surrogate no file system gave
        found = f"{e.object[e.start : e.end]!r}, which no file name holds ({e.reason})"
        raise ImageReadError(path, f"expected a file name, found {found}") from None
    except ValueError:  # a NUL byte: the bytes of a file given for its path?
        found = "a NUL byte in it (an image held in memory goes in as a PIL image)"
        raise ImageReadError(path, f"expected a file name, found {found}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageReadError(path, "expected an image file, found a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(path, f"expected an image file, found {_kind(st.st_mode)}")
    if st.st_size == 0:
        raise ImageReadError(path, "expected an image file, found an empty file (0 bytes)")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "something that is not a regular file"


def is_image_name(path: str | Path) -> bool:
    """Whether a file name ends in one of `IMAGE_EXTENSIONS` (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)
