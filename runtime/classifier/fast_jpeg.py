"""The JPEG path of both decodes through libjpeg-turbo's own API (`simplejpeg`), where it is
installed: the same pixels as Pillow's, at less CPU a file. The fast decode asks it for the
reduced scale of Pillow's ``Image.draft``, the exact decode for the full size.

Pillow spends about as much CPU in Python (opening the file, parsing its header and markers, the
image object's bookkeeping) as libjpeg spends decoding at the reduced scale. simplejpeg decodes a
JPEG held in memory in one C call, into a numpy array, with libjpeg-turbo's DCT scaling and its
default IDCT and upsampling, as Pillow's decoder uses them. Measured on the 2-vCPU Intel Xeon
(AMX), 2,000 of ``data synth``'s 178x218 JPEGs into 64x64, the crop and the resize included:
0.16 ms of CPU a file against Pillow's 0.26-0.31 for the fast decode (docs/RUNTIME.md, "Files
to labels"); on the 2-vCPU AMD EPYC Zen 3, 0.43 ms against 0.60 for the exact one.

`decode_scaled` takes a file only where the result is Pillow's, bit for bit (tested on every
kind of file the tests make), and returns None for every other so that Pillow's path decides:

1. a baseline or progressive JPEG in YCbCr or grayscale (not CMYK, YCCK or an unknown colour
   space, which Pillow converts its own way);
2. with no EXIF block (the orientation it may hold is applied by Pillow's path; a scan of the
   markers before the image data, a few microseconds);
3. within ``max_pixels`` and PIL's own decompression-bomb limit (Pillow's path words the refusal);
4. for the fast decode, large enough for a reduction (``scale``: the same 1/2, 1/4 or 1/8 that
   Pillow's ``draft`` picks, asked of libjpeg-turbo as the least size, so that it picks no scale
   in eighths that Pillow cannot); for the exact one, any size (scale 1); the array it returns
   has exactly the size Pillow's would;
5. that decodes without a warning (``strict``: truncated or corrupt data goes to Pillow's path,
   which refuses it with its message).
"""

from __future__ import annotations

import functools
import logging
import os
import stat
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# 1.: the colour spaces whose conversion to RGB is libjpeg's in both decoders.
_SAME_CONVERSION = ("YCbCr", "Gray")
# JPEG markers: the start of the image, of the scan, and of the EXIF segment.
_SOI, _SOS, _APP1 = 0xD8, 0xDA, 0xE1
_EXIF = b"Exif\x00\x00"


@functools.cache
def simplejpeg_module() -> Any:
    """simplejpeg, or None where it is not installed or decodes otherwise than this process's
    Pillow (`agrees_with_pillow`); `decode_scaled` is then never used."""
    try:
        import simplejpeg
    except ImportError:
        return None
    if not agrees_with_pillow(simplejpeg):
        log.info(
            "simplejpeg decodes JPEGs otherwise than Pillow's libjpeg here; every file takes "
            "Pillow's path"
        )
        return None
    return simplejpeg


def agrees_with_pillow(module: Any) -> bool:
    """Whether ``module`` (simplejpeg) gives Pillow's pixels, bit for bit, for a few JPEGs made
    here (4:2:0 and 4:4:4, baseline and progressive, grayscale, odd sizes) at the full size and
    at Pillow's draft scales. Both wheels carry libjpeg-turbo (Pillow 13's 3.2, simplejpeg 1.9's
    3.1), whose default IDCT and upsampling give the same numbers across its versions; a Pillow
    linked to another libjpeg (IJG's 9 upsamples otherwise) would not, and then the exact decode
    would no longer be the training transform's. About 4 ms once a process (40 ms where Pillow's
    JPEG plugin is not yet loaded); `image_loader` calls it before decoder processes fork."""
    import io

    from PIL import Image

    rows, cols = np.mgrid[0:75, 0:101]
    smooth = np.stack([rows * 3, cols * 2, (rows + cols) % 256], axis=-1)
    noise = np.random.default_rng(0).integers(0, 40, smooth.shape)
    picture = Image.fromarray(((smooth + noise) % 256).astype(np.uint8))
    kinds = [
        (picture, {"quality": 90}),
        (picture, {"quality": 75, "progressive": True, "subsampling": 0}),
        (picture.convert("L"), {"quality": 85}),
    ]
    try:
        for image, options in kinds:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", **options)
            data = buffer.getvalue()
            for scale in (1, 2, 4):
                with Image.open(io.BytesIO(data)) as opened:
                    if scale > 1:
                        opened.draft(opened.mode, (101 // scale, 75 // scale))
                    expected = np.asarray(opened.convert("RGB"))
                got = module.decode_jpeg(
                    data,
                    colorspace="RGB",
                    min_height=expected.shape[0],
                    min_width=expected.shape[1],
                    strict=True,
                )
                if not np.array_equal(got, expected):
                    return False
    except (OSError, ValueError):  # a Pillow without JPEG support; a decode refused
        return False
    return True


def available() -> bool:
    """Whether plain JPEGs go through simplejpeg here (either decode)."""
    return simplejpeg_module() is not None


def decode_scaled(
    data: bytes, draft: Any, *, max_pixels: int | None, bomb_pixels: int | None
) -> np.ndarray | None:
    """A JPEG's RGB pixels [h, w, 3] at the reduction ``draft(width, height)`` gives (Pillow's
    scale: 2, 4 or 8; 1 for the full size; None: Pillow's path), or None where Pillow's path must
    decode it (module docstring). ``max_pixels`` and ``bomb_pixels`` (PIL's
    ``Image.MAX_IMAGE_PIXELS``) are the limits above which Pillow's path refuses the file."""
    module = simplejpeg_module()
    if module is None or data[:2] != b"\xff" + bytes([_SOI]) or _has_exif(data):  # 2.
        return None
    try:
        height, width, colorspace, _ = module.decode_jpeg_header(data)
    except ValueError:
        return None
    pixels = width * height
    if colorspace not in _SAME_CONVERSION:  # 1.
        return None
    if (max_pixels is not None and pixels > max_pixels) or (
        bomb_pixels is not None and pixels > bomb_pixels
    ):  # 3.
        return None
    scale = draft(width, height)
    if scale is None:  # 4.
        return None
    size = (-(-height // scale), -(-width // scale))
    try:
        array = module.decode_jpeg(
            data, colorspace="RGB", min_height=size[0], min_width=size[1], strict=True
        )
    except ValueError:  # 5.
        return None
    return array if array.shape[:2] == size else None


# The largest file `load_scaled` reads into memory at once; a larger one takes Pillow's path.
MAX_BYTES = 32 * 2**20
# The names `load_scaled` takes for JPEGs (a JPEG named otherwise takes Pillow's path).
JPEG_NAMES = (".jpg", ".jpeg", ".jpe", ".jfif")


def load_scaled(path: Any, side: int | None, max_pixels: int | None) -> np.ndarray | None:
    """`decode_scaled` of the file at ``path`` with `draft_scale`'s reduction for ``side`` (the
    fast decode; None: the full size, the exact decode): the pixels Pillow's path would give
    (with its draft for ``side``), or None where Pillow's path must take the file (simplejpeg
    missing, not a path, not named as a JPEG, not a regular file, unreadable, larger than
    `MAX_BYTES`, or the module
    docstring's cases). With PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` set, always None (Pillow's
    path refuses to run so)."""
    Image, ImageFile = _pil()
    if simplejpeg_module() is None or ImageFile.LOAD_TRUNCATED_IMAGES:
        return None
    if not isinstance(path, (str, os.PathLike)) or not str(path).lower().endswith(JPEG_NAMES):
        return None
    try:
        status = os.stat(path)
        # a FIFO would block the read for ever
        if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_BYTES:
            return None
        with open(path, "rb", buffering=0) as file:
            # the size it had, and a byte more to see whether it grew since (asking for
            # MAX_BYTES would allocate that much for every file: 0.02 ms against 0.005)
            data = file.read(status.st_size + 1)
    except (OSError, ValueError):  # ValueError: a NUL byte, a lone surrogate in the name
        return None  # Pillow's path says what is wrong
    if len(data) != status.st_size:  # changed while being read: Pillow's path takes it
        return None
    return decode_scaled(
        data,
        lambda width, height: 1 if side is None else draft_scale(width, height, side),
        max_pixels=max_pixels,
        bomb_pixels=Image.MAX_IMAGE_PIXELS,
    )


@functools.cache
def _pil() -> tuple[Any, Any]:
    """PIL's Image and ImageFile modules, imported once (not at every file)."""
    from PIL import Image, ImageFile

    return Image, ImageFile


def draft_scale(width: int, height: int, side: int) -> int | None:
    """The largest reduction (8, 4 or 2) of a ``width`` x ``height`` JPEG that leaves its
    shorter side at least ``side`` pixels and that Pillow's ``draft`` picks when asked for it;
    None where there is none."""
    for scale in (8, 4, 2):
        if min(width, height) // scale >= side:
            break
    else:
        return None
    request = (width // scale, height // scale)
    # Pillow picks the largest of 8, 4, 2 that its integer ratio allows; only that one is asked.
    allowed = min(width // request[0], height // request[1])
    return scale if max(s for s in (8, 4, 2, 1) if s <= allowed) == scale else None


def _has_exif(data: bytes) -> bool:
    """Whether an APP1 segment before the scan holds EXIF data (2.); a malformed marker chain
    counts as EXIF, so that Pillow's path judges the file."""
    at = 2
    end = len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            return True
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == _SOS:
            return False
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if length < 2:
            return True
        if marker == _APP1 and data[at + 4 : at + 10] == _EXIF:
            return True
        at += 2 + length
    return True


__all__ = [
    "JPEG_NAMES",
    "MAX_BYTES",
    "agrees_with_pillow",
    "available",
    "decode_scaled",
    "draft_scale",
    "load_scaled",
    "simplejpeg_module",
]
