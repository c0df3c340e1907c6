"""Preprocessing: every PIL mode becomes the RGB a user expects, EXIF orientation is applied, the
crop is the centred square, and a file that is not a usable image is refused with its reason."""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from onnxedge.models.registry import SQUARE_CROP_64
from onnxedge.runtime.classifier.crop import center_square, draft_side
from onnxedge.runtime.classifier.preprocess import (
    MAX_PIXELS,
    ImageReadError,
    is_image_name,
    load_image,
    preprocess_image,
    to_rgb,
)
from onnxedge.runtime.errors import OnnxEdgeError

SPEC = SQUARE_CROP_64
WHITE, BLACK, RED = (255, 255, 255), (0, 0, 0), (255, 0, 0)


def pixel(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    return tuple(rgb.getpixel(xy))


def palette_image(transparent_index: int | None) -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)  # red
    image.putpixel((1, 0), 1)  # blue
    if transparent_index is not None:
        image.info["transparency"] = transparent_index
    return image


def gray16(values: list[int], mode: str = "I;16") -> Image.Image:
    array = np.asarray([values], dtype=np.uint16 if mode == "I;16" else np.int32)
    return Image.fromarray(array).convert(mode) if mode != "I;16" else Image.fromarray(array)


# (image, xy, expected RGB): the hand-computed result of each mode's conversion.
MODE_CASES = {
    "RGB": (Image.new("RGB", (1, 1), (10, 20, 30)), (0, 0), (10, 20, 30)),
    "L": (Image.new("L", (1, 1), 100), (0, 0), (100, 100, 100)),
    "1 white": (Image.new("1", (1, 1), 1), (0, 0), WHITE),
    "1 black": (Image.new("1", (1, 1), 0), (0, 0), BLACK),
    "P": (palette_image(None), (1, 0), (0, 0, 255)),
    "P transparent pixel": (palette_image(0), (0, 0), WHITE),
    "P opaque pixel": (palette_image(0), (1, 0), (0, 0, 255)),
    "RGBA alpha 0": (Image.new("RGBA", (1, 1), (255, 0, 0, 0)), (0, 0), WHITE),
    "RGBA alpha 255": (Image.new("RGBA", (1, 1), (255, 0, 0, 255)), (0, 0), RED),
    "RGBA alpha 51": (Image.new("RGBA", (1, 1), (0, 0, 0, 51)), (0, 0), (204, 204, 204)),
    "LA alpha 0": (Image.new("LA", (1, 1), (50, 0)), (0, 0), WHITE),
    "LA alpha 255": (Image.new("LA", (1, 1), (50, 255)), (0, 0), (50, 50, 50)),
    "PA alpha 0": (Image.new("PA", (1, 1), (0, 0)), (0, 0), WHITE),
    "CMYK red": (Image.new("CMYK", (1, 1), (0, 255, 255, 0)), (0, 0), RED),
    "CMYK black": (Image.new("CMYK", (1, 1), (0, 0, 0, 255)), (0, 0), BLACK),
    "I;16 max": (gray16([65535, 32768, 0]), (0, 0), WHITE),
    "I;16 half": (gray16([65535, 32768, 0]), (1, 0), (128, 128, 128)),
    "I;16 zero": (gray16([65535, 32768, 0]), (2, 0), BLACK),
    "I 16-bit data": (Image.fromarray(np.array([[65535, 0]], dtype=np.int32)), (0, 0), WHITE),
    "I 8-bit data": (Image.fromarray(np.array([[200, 0]], dtype=np.int32)), (0, 0), (200,) * 3),
    "F in [0, 1]": (Image.fromarray(np.array([[1.0, 0.5]], dtype=np.float32)), (1, 0), (128,) * 3),
    "F in [0, 255]": (
        Image.fromarray(np.array([[200.0, 0]], dtype=np.float32)),
        (0, 0),
        (200,) * 3,
    ),
    "F NaN": (Image.fromarray(np.array([[np.nan, 1.0]], dtype=np.float32)), (0, 0), BLACK),
}


@pytest.mark.parametrize("case", list(MODE_CASES))
def test_to_rgb_by_hand(case):
    image, xy, expected = MODE_CASES[case]
    assert pixel(image, xy) == expected


def test_to_rgb_partial_alpha_composites_onto_white():
    # red at alpha 128 over white: R stays 255, G and B are 255 * (1 - 128/255) = 127
    r, g, b = pixel(Image.new("RGBA", (1, 1), (255, 0, 0, 128)))
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1


def test_to_rgb_transparency_colour_becomes_white(tmp_path):
    """L, RGB and I;16 PNGs with a tRNS colour: that colour is transparent, so white."""
    for mode, colour, other in (
        ("L", 10, 20),
        ("RGB", (1, 2, 3), (4, 5, 6)),
        ("I;16", 10, 20),
    ):
        image = Image.new(mode, (2, 1), colour)
        image.putpixel((1, 0), other)
        path = tmp_path / f"{mode.replace(';', '')}.png"
        image.save(path, transparency=colour)
        with Image.open(path) as opened:
            opened.load()
            assert opened.info.get("transparency") == colour, mode
            assert pixel(opened, (0, 0)) == WHITE, mode
            assert pixel(opened, (1, 0)) != WHITE, mode


def test_rgb_without_transparency_is_returned_as_is():
    image = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(image) is image


def test_preprocess_i16_full_scale_is_one():
    array = preprocess_image(gray16([65535] * 4), SPEC)
    assert array.shape == (3, 64, 64) and array.dtype == np.float32
    assert np.all(array == 1.0)


def test_preprocess_crops_the_centred_square():
    """CelebA-sized 178x218: 20 red rows above and below a green 178x178 centre. The crop keeps
    exactly the centre, so no red survives the resize."""
    image = Image.new("RGB", (178, 218), RED)
    image.paste((0, 255, 0), (0, 20, 178, 198))
    array = preprocess_image(image, SPEC)
    assert array.shape == (3, 64, 64)
    np.testing.assert_array_equal(array[0], 0.0)
    np.testing.assert_array_equal(array[1], 1.0)
    # without the crop the red bands would reach the top rows
    uncropped = preprocess_image(image, {**SPEC, "crop": "none"})
    assert uncropped[0, 0].max() == 1.0


def test_a_crop_fraction_keeps_that_much_of_the_shorter_side():
    """``crop_fraction`` 0.875 with a resize to 224 is the geometry of Resize(256) then
    CenterCrop(224): a 256x320 image keeps its centred 224x224."""
    assert center_square(256, 320, 0.875) == (16, 48, 240, 272)
    assert center_square(178, 218, 0.875) == (11, 31, 167, 187)
    assert center_square(178, 218) == center_square(178, 218, 1.0) == (0, 20, 178, 198)
    image = Image.new("RGB", (256, 320), RED)
    image.paste((0, 255, 0), (16, 48, 240, 272))
    spec = {**SPEC, "resize": [224, 224], "crop_fraction": 0.875}
    array = preprocess_image(image, spec)
    np.testing.assert_array_equal(array[0], 0.0)  # no red: only the centred 224x224 is kept
    np.testing.assert_array_equal(array[1], 1.0)
    assert preprocess_image(image, {**spec, "crop_fraction": 1.0})[0].max() == 1.0


def test_a_crop_fraction_raises_what_the_draft_keeps():
    """A JPEG decoded at a reduced scale must keep, after the crop, the model's side."""
    spec = {**SPEC, "resize": [224, 224]}
    assert draft_side(spec) == 224
    assert draft_side({**spec, "crop_fraction": 0.875}) == 256
    assert draft_side({**spec, "crop": "none", "crop_fraction": 0.875}) == 224


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"crop_fraction": 0.0}, "crop_fraction: expected a number in (0, 1], found 0.0"),
        ({"crop_fraction": 1.5}, "found 1.5"),
        ({"crop_fraction": "most"}, "found 'most'"),
        ({"crop": "none", "crop_fraction": 0.9}, "expected crop center-square"),
        ({"scale": 0}, "scale: expected a positive number, found 0"),
        ({"scale": True}, "found True"),
        ({"scale": float("nan")}, "found nan"),
    ],
)
def test_a_crop_fraction_and_a_scale_are_checked_where_a_bundle_is_made(changes, message):
    from onnxedge.models.registry import image_preprocessing
    from onnxedge.runtime.bundle.manifest import check_preprocessing
    from onnxedge.runtime.errors import BundleError

    with pytest.raises(OnnxEdgeError, match=re.escape(message)):
        image_preprocessing(64, 64, **{"crop": "center-square", **changes})
    if "crop_fraction" in changes and changes.get("crop") is None:
        with pytest.raises(BundleError, match="crop_fraction as a number in"):
            check_preprocessing({**SPEC, **changes}, "manifest.json")


def test_preprocess_scale_mean_std_layout():
    image = Image.new("RGB", (64, 64), (255, 0, 51))
    array = preprocess_image(image, {**SPEC, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    np.testing.assert_allclose(array[:, 10, 10], [1.0, -1.0, -0.6], atol=1e-6)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"crop": "random"}, "unsupported preprocessing crop"),
        ({"interpolation": "magic"}, "unsupported interpolation"),
        ({"color": "BGR"}, "unsupported preprocessing color"),
        ({"layout": "NHWC"}, "unsupported layout"),
    ],
)
def test_preprocess_refuses_specs_it_cannot_honour(change, message):
    with pytest.raises(OnnxEdgeError, match=message):
        preprocess_image(Image.new("RGB", (8, 8)), {**SPEC, **change})


# -- EXIF orientation ------------------------------------------------------------------------------


def top_red_bottom_blue() -> Image.Image:
    image = Image.new("RGB", (64, 64), (0, 0, 255))
    image.paste(RED, (0, 0, 64, 32))
    return image


def with_orientation(image: Image.Image, orientation: int, path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied(tmp_path):
    """Orientation 6 means "turn 90 degrees clockwise to view": the red top becomes the right."""
    path = with_orientation(top_red_bottom_blue(), 6, tmp_path / "rotated.png")
    array = load_image(path, SPEC)
    assert tuple(array[:, 32, 60]) == (1.0, 0.0, 0.0)  # right: red
    assert tuple(array[:, 32, 3]) == (0.0, 0.0, 1.0)  # left: blue
    with Image.open(path) as opened:  # the PIL-image path agrees with the file path
        np.testing.assert_array_equal(preprocess_image(opened, SPEC), array)


def test_exif_orientation_1_is_left_alone(tmp_path):
    path = with_orientation(top_red_bottom_blue(), 1, tmp_path / "upright.png")
    array = load_image(path, SPEC)
    assert tuple(array[:, 3, 32]) == (1.0, 0.0, 0.0)  # top: red
    assert tuple(array[:, 60, 32]) == (0.0, 0.0, 1.0)


# -- files in each mode ---------------------------------------------------------------------------


def mode_files(root: Path) -> dict[str, tuple[Path, tuple[float, float, float]]]:
    """One file per mode, uniformly one colour, and the [0, 1] RGB it must become."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}

    def add(name: str, image: Image.Image, rgb: tuple[int, int, int], **save: object) -> None:
        path = root / name
        image.save(path, **save)
        files[name] = (path, tuple(c / 255 for c in rgb))

    add("rgb.jpg", Image.new("RGB", (40, 30), (255, 255, 255)), WHITE, quality=95)
    add("gray.png", Image.new("L", (40, 30), 102), (102,) * 3)
    add("bilevel.png", Image.new("1", (40, 30), 1), WHITE)
    add("palette.gif", palette_image(None).crop((0, 0, 1, 1)).resize((40, 30)), RED)
    add("palette_trns.png", Image.new("P", (40, 30), 0), WHITE, transparency=0)
    add("rgba.png", Image.new("RGBA", (40, 30), (255, 0, 0, 0)), WHITE)
    add("la.png", Image.new("LA", (40, 30), (0, 0)), WHITE)
    add("cmyk.jpg", Image.new("CMYK", (40, 30), (0, 0, 0, 0)), WHITE, quality=95)
    add("cmyk.tif", Image.new("CMYK", (40, 30), (0, 255, 255, 0)), RED)
    add("gray16.png", Image.fromarray(np.full((30, 40), 65535, np.uint16)), WHITE)
    add("int32.tif", Image.fromarray(np.full((30, 40), 65535, np.int32)), WHITE)
    add("float.tif", Image.fromarray(np.full((30, 40), 0.4, np.float32)), (102,) * 3)
    return files


def test_mode_files_convert_as_expected(tmp_path):
    for name, (path, rgb) in mode_files(tmp_path).items():
        with Image.open(path) as opened:
            mode = opened.mode
        array = load_image(path, SPEC)
        assert array.shape == (3, 64, 64) and array.dtype == np.float32, name
        centre = array[:, 32, 32]
        np.testing.assert_allclose(centre, rgb, atol=2 / 255, err_msg=f"{name} ({mode})")


def test_mode_files_cover_every_mode(tmp_path):
    modes = set()
    for path, _ in mode_files(tmp_path).values():
        with Image.open(path) as opened:
            modes.add(opened.mode)
    assert {"RGB", "L", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F"} <= modes


# -- files that are not usable images -------------------------------------------------------------


def noise_bytes(fmt: str, size: tuple[int, int] = (80, 80)) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` (CRC fixed): a decompression bomb's
    header in 70 bytes."""
    data = bytearray(noise_bytes("PNG", (1, 1)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def refused(path: Path, **kw: object) -> str:
    with pytest.raises(ImageReadError) as info:
        load_image(path, SPEC, **kw)
    assert str(info.value).startswith(f"{path}: ")
    return info.value.reason


def test_truncated_images_are_not_half_loaded_even_if_pil_is_told_to(tmp_path, monkeypatch):
    path = tmp_path / "cut.png"
    data = noise_bytes("PNG")
    path.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(OnnxEdgeError, match="LOAD_TRUNCATED_IMAGES is True in this process"):
        load_image(path, SPEC)


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9])
def test_truncated_file_is_refused(tmp_path, fmt, suffix, keep):
    data = noise_bytes(fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: int(len(data) * keep)])
    assert "truncated" in refused(path)


def test_jpeg_without_its_end_marker_is_refused(tmp_path):
    path = tmp_path / "no_eoi.jpg"
    path.write_bytes(noise_bytes("JPEG")[:-2])
    assert "truncated" in refused(path)


def test_bad_files_are_refused_with_their_reason(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("this is not a PNG\n")
    (tmp_path / "dir.jpg").mkdir()
    assert (
        refused(tmp_path / "empty.jpg") == "expected an image file, found an empty file (0 bytes)"
    )
    assert refused(tmp_path / "text.png") == "expected an image file, found no format PIL reads"
    assert refused(tmp_path / "dir.jpg") == "expected an image file, found a directory"
    assert refused(tmp_path / "missing.png") == "expected an image file, found nothing there"
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    assert (
        refused(tmp_path / "link.png") == "expected an image file, found a symbolic link to nothing"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this OS")
def test_named_pipe_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    assert refused(tmp_path / "pipe.jpg") == "expected an image file, found a named pipe"


def test_bomb_above_the_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(9000, 9000))  # 81 MP: above ours, below PIL's warning (89 MP)
    reason = refused(path)
    assert "9000x9000 is 81,000,000 pixels, more than the limit of 64,000,000" in reason
    assert MAX_PIXELS == 64_000_000


def test_bomb_above_pils_hard_limit_is_refused(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_claiming(20000, 20000))  # 400 MP: PIL raises at open
    assert "decompression bomb" in refused(path, max_pixels=None)


def test_max_pixels_is_a_parameter(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(path)
    assert "100x100 is 10,000 pixels, more than the limit of 9,999" in refused(
        path, max_pixels=9999
    )
    assert load_image(path, SPEC, max_pixels=10_000).shape == (3, 64, 64)


def test_is_image_name():
    assert is_image_name("a/B.JPG") and is_image_name("x.tiff") and is_image_name("y.webp")
    assert not is_image_name("notes.txt") and not is_image_name("jpg")


@pytest.mark.parametrize(
    "mean,std",
    [([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]), ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
     ([0.0, 0.5, 0.0], [1.0, 1.0, 0.5])],
)  # fmt: skip
def test_normalize_of_uint8_pixels_is_the_float32_formula_bit_for_bit(mean, std):
    """uint8 pixels scaled plane by plane (a mean of 0 and a std of 1 skip their passes) give
    ``(x * scale - mean) / std`` in float32, channels first, bit for bit."""
    from onnxedge.runtime.classifier.preprocess import normalize

    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    spec = {"scale": 1 / 255, "mean": mean, "std": std}
    want = (pixels.astype(np.float32) * np.float32(1 / 255) - np.float32(mean)) / np.float32(std)
    got = normalize(pixels, spec)
    assert got.dtype == np.float32 and got.shape == (2, 3, 5, 7)
    assert np.array_equal(got, np.moveaxis(want, -1, -3))
