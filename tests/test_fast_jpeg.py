"""The simplejpeg path of both decodes gives Pillow's pixels bit for bit (the fast decode's at
Pillow's draft scale, the exact one's at the full size), takes only the files it can give them
for, and leaves every other file, and every bad one, to Pillow's path."""

from __future__ import annotations

import numpy as np
import pytest
from test_fast_decode import jpeg, kinds, photo

from onnxedge.models.registry import SQUARE_CROP_64
from onnxedge.runtime.classifier import fast_jpeg
from onnxedge.runtime.classifier.preprocess import (
    DECODES,
    EXACT,
    FAST,
    ImageReadError,
    load_pixels,
)

pytest.importorskip("simplejpeg", reason="the fast JPEG path needs simplejpeg (make venv has it)")

SPEC = SQUARE_CROP_64
# Which of `kinds`' files simplejpeg takes: plain JPEGs in YCbCr or gray, without EXIF.
TAKEN = {"baseline.jpg", "progressive.jpg", "gray.jpg"}


def pillow_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_jpeg, "simplejpeg_module", lambda: None)


def taken(path, side: int | None = 64) -> bool:
    """Whether simplejpeg takes the file: at the fast decode's scale for ``side``, or at the full
    size (None, the exact decode)."""
    return fast_jpeg.load_scaled(path, side, None) is not None


@pytest.mark.parametrize("decode", DECODES)
def test_every_kind_of_file_gives_pillows_pixels_and_only_plain_jpegs_take_simplejpeg(
    tmp_path, monkeypatch, decode
):
    files = kinds(tmp_path)
    more = {
        "subsampled-444.jpg": jpeg(photo((333, 251), 1), subsampling=0),
        "subsampled-422.jpg": jpeg(photo((333, 251), 2), subsampling=1),
        "restart-markers.jpg": jpeg(photo((500, 375), 3), restart_marker_blocks=4),
        "odd-size.jpg": jpeg(photo((1001, 767), 4)),
        "large-scale.jpg": jpeg(photo((1300, 1100), 5)),  # 1/8 of it is still 137 pixels
    }
    for name, data in more.items():
        (tmp_path / name).write_bytes(data)
        files[name] = (tmp_path / name, True)
    side = 64 if decode == FAST else None
    got = {name: load_pixels(path, SPEC, decode=decode) for name, (path, _) in files.items()}
    assert {name for name, (path, _) in files.items() if taken(path, side)} == TAKEN | set(more)
    pillow_only(monkeypatch)
    assert not any(taken(path, side) for path, _ in files.values())
    for name, (path, _) in files.items():
        assert np.array_equal(got[name], load_pixels(path, SPEC, decode=decode)), name


def test_a_jpeg_too_small_to_reduce_or_named_otherwise_takes_pillows_path(tmp_path):
    small = tmp_path / "small.jpg"
    small.write_bytes(jpeg(photo((120, 200))))  # 120 // 2 < 64: no reduction
    unnamed = tmp_path / "photo.dat"
    unnamed.write_bytes(jpeg(photo((400, 300))))
    assert not taken(small) and not taken(unnamed)
    assert taken(small, None)  # the exact decode takes it at its full size
    assert taken(tmp_path.joinpath("photo.dat").rename(tmp_path / "photo.JPEG"))


def test_a_file_over_the_limits_takes_pillows_path_which_refuses_it(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg(photo((800, 600))))
    assert fast_jpeg.load_scaled(path, 64, 800 * 600) is not None
    assert fast_jpeg.load_scaled(path, 64, 800 * 600 - 1) is None
    with pytest.raises(ImageReadError, match="more than the limit of 479,999"):
        load_pixels(path, SPEC, decode=FAST, max_pixels=800 * 600 - 1)
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert fast_jpeg.load_scaled(path, 64, None) is None  # PIL's bomb limit: Pillow's words
    monkeypatch.setattr(fast_jpeg, "MAX_BYTES", 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert fast_jpeg.load_scaled(path, 64, None) is None  # too many bytes to read at once


@pytest.mark.parametrize("cut", [2000, 600, 3])
def test_truncated_or_corrupt_data_is_refused_with_pillows_message(tmp_path, cut):
    data = jpeg(photo((400, 300)))
    path = tmp_path / "bad.jpg"
    path.write_bytes(data[:cut])
    assert not taken(path)
    for decode in DECODES:
        with pytest.raises(ImageReadError):
            load_pixels(path, SPEC, decode=decode)
    corrupt = bytearray(data)
    corrupt[len(data) // 2 : len(data) // 2 + 64] = b"\xff\x00" * 32  # damaged entropy data
    path.write_bytes(bytes(corrupt))
    assert not taken(path)


def test_the_exif_scan_finds_exif_and_treats_a_broken_marker_chain_as_exif():
    plain = jpeg(photo((200, 150)))
    assert not fast_jpeg._has_exif(plain)
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 1
    assert fast_jpeg._has_exif(jpeg(photo((200, 150)), exif=exif.tobytes()))
    assert fast_jpeg._has_exif(plain[:2] + b"\x00" + plain[3:])  # not a marker where one must be
    assert fast_jpeg._has_exif(plain[:6])  # ends before the scan


def test_the_fast_path_is_what_the_classifier_and_predict_use(
    smile_bundle, tmp_path, monkeypatch, caplog
):
    """The classifier's fast decode goes through simplejpeg, and its labels and probabilities are
    those of Pillow's path."""
    from onnxedge.runtime.classifier.classifier import Classifier

    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(jpeg(photo((178, 218), i)))
    calls = []
    real = fast_jpeg.decode_scaled
    monkeypatch.setattr(
        fast_jpeg, "decode_scaled", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    clf = Classifier.from_bundle(smile_bundle, decode=FAST)
    with_simplejpeg = list(clf.predict_files(paths, decode_threads=1))
    assert len(calls) == len(paths)
    pillow_only(monkeypatch)
    with_pillow = list(clf.predict_files(paths, decode_threads=1))
    assert len(calls) == len(paths)
    assert [r.to_dict() for r in with_simplejpeg] == [r.to_dict() for r in with_pillow]
    assert all(r.error is None for r in with_pillow)


def test_what_is_not_a_regular_file_is_left_to_pillows_path_which_refuses_it(tmp_path):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would block for ever
    (tmp_path / "folder.jpg").mkdir()
    for path in (fifo, tmp_path / "folder.jpg", tmp_path / "missing.jpg"):
        assert not taken(path)
        with pytest.raises(ImageReadError, match="expected an image file"):
            load_pixels(path, SPEC, decode=FAST)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"channel_order": "BGR"},
        {"crop": "none"},
        {"interpolation": "bicubic", "resize": [48, 80]},
        {"resize": [120, 120]},  # larger than the draft keeps of small files: Pillow resizes up
        {"resize": [48, 48], "crop_fraction": 0.875},  # the draft keeps 55 pixels, the crop 48
    ],
)
@pytest.mark.parametrize("decode", DECODES)
def test_the_loaders_plan_gives_load_pixels_pixels_for_every_kind_of_file(
    tmp_path, monkeypatch, changes, decode
):
    """The pipeline's loader reads the spec once (`FastPlan`); its pixels are `load_pixels`'
    for every kind of file, whichever path each takes, and its errors the same; with the exact
    decode, they are also Pillow's alone (simplejpeg not installed)."""
    from onnxedge.runtime.classifier.files import image_loader

    spec = {**SPEC, **changes}
    load = image_loader(spec, max_pixels=None, decode=decode)
    assert load.plan is not None
    files = kinds(tmp_path)
    (tmp_path / "text.jpg").write_text("not a picture")
    got = {name: load(path) for name, (path, _) in files.items()}
    for name, (path, _) in files.items():
        assert np.array_equal(got[name], load_pixels(path, spec, decode=decode)), name
    pillow_only(monkeypatch)
    for name, (path, _) in files.items():
        assert np.array_equal(got[name], load_pixels(path, spec, decode=decode)), name
    with pytest.raises(ImageReadError, match="found no format PIL reads"):
        load(tmp_path / "text.jpg")


@pytest.mark.parametrize(
    "changes", [{"color": "L"}, {"resize_mode": "letterbox"}, {"crop": "top-left"}]
)
def test_options_the_plan_does_not_cover_take_load_pixels(changes):
    from onnxedge.runtime.classifier.fast_plan import fast_plan
    from onnxedge.runtime.classifier.files import image_loader

    assert fast_plan({**SPEC, **changes}) is None
    assert image_loader({**SPEC, **changes}, max_pixels=None, decode=FAST).plan is None
    assert image_loader({**SPEC, **changes}, max_pixels=None, decode=EXACT).plan is None


def test_a_file_that_changes_size_while_read_takes_pillows_path(tmp_path, monkeypatch):
    path = tmp_path / "face.jpg"
    path.write_bytes(jpeg(photo((178, 218))))
    assert taken(path)
    import os

    real = os.stat

    class Grown:  # the size os.stat saw, one byte short of what is read
        def __init__(self, status):
            self.st_mode, self.st_size = status.st_mode, status.st_size - 1

    monkeypatch.setattr(fast_jpeg.os, "stat", lambda p, *a, **k: Grown(real(p, *a, **k)))
    assert not taken(path)
    monkeypatch.setattr(fast_jpeg, "MAX_BYTES", real(path).st_size - 10)
    monkeypatch.setattr(fast_jpeg.os, "stat", real)
    assert not taken(path)  # over the limit before it is read


def test_simplejpeg_is_used_only_where_it_decodes_as_pillow_does(monkeypatch):
    """A simplejpeg whose pixels are not Pillow's (a Pillow linked to another libjpeg) is not
    used: every file then takes Pillow's path, and the exact decode stays Pillow's."""
    import simplejpeg

    assert fast_jpeg.agrees_with_pillow(simplejpeg)

    class Otherwise:  # one pixel value off
        @staticmethod
        def decode_jpeg(data, **kwargs):
            pixels = simplejpeg.decode_jpeg(data, **kwargs).copy()
            pixels[0, 0, 0] ^= 1
            return pixels

    assert not fast_jpeg.agrees_with_pillow(Otherwise)

    class Failing:
        @staticmethod
        def decode_jpeg(data, **kwargs):
            raise ValueError("unsupported")

    assert not fast_jpeg.agrees_with_pillow(Failing)
    from PIL import Image

    def no_jpeg_encoder(*args, **kwargs):
        raise OSError("encoder jpeg not available")

    with monkeypatch.context() as patched:
        patched.setattr(Image.Image, "save", no_jpeg_encoder)
        assert not fast_jpeg.agrees_with_pillow(simplejpeg)
    fast_jpeg.simplejpeg_module.cache_clear()
    monkeypatch.setattr(fast_jpeg, "agrees_with_pillow", lambda module: False)
    try:
        assert fast_jpeg.simplejpeg_module() is None and not fast_jpeg.available()
    finally:
        fast_jpeg.simplejpeg_module.cache_clear()
    monkeypatch.undo()
    assert fast_jpeg.available()
