"""How files become pixels: ``exact`` is the training transform's bit for bit (uint8 first, the
scaling last, straight into the planar output); ``fast`` lets libjpeg decode a JPEG at a reduced
scale, and takes the exact path for every other file; each kind of file takes a correct path with
either."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxedge.models.registry import SQUARE_CROP_64
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.classifier.preprocess import (
    DECODES,
    EXACT,
    FAST,
    check_decode,
    fast_decode_vouched,
    image_pixels,
    load_image,
    load_pixels,
    normalize,
    open_image,
    preprocess_image,
    trained_decode,
)

SPEC = SQUARE_CROP_64
SKEWED = {**SPEC, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth picture with an edge (what a photo is; noise is not): a gradient, a disc."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    r = (255 * x / max(width - 1, 1)).astype(np.uint8)
    g = (255 * y / max(height - 1, 1)).astype(np.uint8)
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(size) / 3) ** 2
    b = np.where(disc, 220, 30).astype(np.uint8)
    pixels = np.stack([r, g, b], axis=-1).astype(np.int16) + rng.integers(-3, 4, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# -- exact ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [SPEC, SKEWED, {**SPEC, "channel_order": "BGR"}])
def test_the_uint8_path_gives_the_float_arithmetic_bit_for_bit(spec):
    """`normalize` of uint8 pixels (channel by channel into the planar output) is the float32
    arithmetic on the same values, and a table of the 256 values per channel too."""
    pixels = np.random.default_rng(1).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    by_planes = normalize(pixels, spec)
    by_arithmetic = normalize(pixels.astype(np.float32), spec)
    assert by_planes.dtype == np.float32 and by_planes.shape == (5, 3, 64, 64)
    assert np.array_equal(by_planes, by_arithmetic)
    table = normalize(np.arange(256, dtype=np.float32).repeat(3).reshape(1, 256, 3), spec)[:, 0]
    by_table = np.stack([table[c][pixels[..., c]] for c in range(3)], axis=1)
    assert np.array_equal(by_planes.view(np.uint32), by_table.view(np.uint32))
    assert np.array_equal(normalize(pixels[0], spec), by_arithmetic[0])  # one image, [H, W, C]


def test_the_uint8_path_refuses_pixels_with_other_channels():
    with pytest.raises(Exception, match="expected 3 channels"):
        normalize(np.zeros((4, 4, 4), np.uint8), SPEC)


def test_exact_is_the_pil_image_path_bit_for_bit(tmp_path):
    """`load_image` (file -> uint8 -> scaled) equals `preprocess_image` of the opened image, and a
    batch scaled at once equals the images scaled one by one."""
    paths = []
    for i, size in enumerate([(178, 218), (640, 480), (97, 61)]):
        path = tmp_path / f"{i}.jpg"
        photo(size, i).save(path, quality=90)
        paths.append(path)
    for spec in (SPEC, SKEWED):
        one_by_one = []
        for path in paths:
            with Image.open(path) as opened:
                want = preprocess_image(opened, spec)
            assert np.array_equal(load_image(path, spec), want)
            assert np.array_equal(load_image(path, spec, decode=EXACT), want)
            one_by_one.append(want)
        batch = np.stack([load_pixels(p, spec) for p in paths])
        assert np.array_equal(normalize(batch, spec), np.stack(one_by_one))


# -- fast -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,scale",
    [((178, 218), 2), ((640, 480), 4), ((4000, 3000), 8), ((127, 200), 1), ((60, 60), 1)],
)
def test_fast_decodes_a_jpeg_at_the_largest_scale_that_keeps_the_model_size(tmp_path, size, scale):
    path = tmp_path / "photo.jpg"
    photo(size).save(path, quality=90)
    image = open_image(path, draft_side=64)
    width, height = size
    assert image.size == (-(-width // scale), -(-height // scale))
    assert min(image.size) >= 64 or scale == 1
    fast, exact = load_pixels(path, SPEC, decode=FAST), load_pixels(path, SPEC)
    assert fast.shape == exact.shape == (64, 64, 3) and fast.dtype == np.uint8
    if scale == 1:
        assert np.array_equal(fast, exact)  # too small to reduce: the exact path
    else:
        assert not np.array_equal(fast, exact)  # it did take another path
        assert mean_abs(fast, exact) < 3.0  # and it is the same picture


def jpeg(image: Image.Image, **save: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, **save)
    return out.getvalue()


def kinds(root: Path) -> dict[str, tuple[Path, bool]]:
    """One file of each kind a user has, 400x300 or so: {name: (path, whether fast reduces it)}."""
    root.mkdir(parents=True, exist_ok=True)
    base = photo((400, 300))
    files: dict[str, tuple[Path, bool]] = {}

    def add(name: str, data: bytes | Image.Image, reduced: bool, **save: object) -> None:
        path = root / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            data.save(path, **save)
        files[name] = (path, reduced)

    add("baseline.jpg", jpeg(base), True)
    add("progressive.jpg", jpeg(base, progressive=True), True)
    add("cmyk.jpg", jpeg(base.convert("CMYK")), True)
    add("gray.jpg", jpeg(base.convert("L")), True)
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    add("exif-rotated.jpg", jpeg(base.rotate(90, expand=True), exif=exif.tobytes()), True)
    add("gray16.png", Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257), False)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    add("alpha.png", rgba, False)
    add("palette.gif", base.convert("P"), False)
    add("plain.bmp", base, False)
    add("lossy.webp", base, False, quality=90)
    return files


def test_every_kind_of_file_takes_a_correct_path_with_either_decode(tmp_path):
    """JPEGs (baseline, progressive, CMYK, grayscale, EXIF-rotated) are reduced by ``fast`` and stay
    the same picture, the right way up; the others take the exact path under ``fast`` too."""
    files = kinds(tmp_path)
    assert {n.rsplit(".", 1)[1] for n in files} == {"jpg", "png", "gif", "bmp", "webp"}
    upright = load_pixels(files["baseline.jpg"][0], SPEC)
    for name, (path, reduced) in files.items():
        exact = load_pixels(path, SPEC, decode=EXACT)
        fast = load_pixels(path, SPEC, decode=FAST)
        with Image.open(path) as opened:
            assert np.array_equal(exact, image_pixels(opened, SPEC)), name
            drafted = open_image(path, draft_side=64)
            assert (drafted.size != opened.size) == reduced, (name, drafted.size)
        assert fast.shape == (64, 64, 3) and fast.dtype == np.uint8, name
        if reduced:
            assert mean_abs(fast, exact) < 3.0, name
        else:
            assert np.array_equal(fast, exact), name
    # EXIF applied on the fast path as on the exact one: the rotated file shows the upright photo
    rotated = load_pixels(files["exif-rotated.jpg"][0], SPEC, decode=FAST)
    assert mean_abs(rotated, upright) < 4.0
    assert mean_abs(np.rot90(rotated), upright) > 20.0  # which a wrong turn would not give


def test_fast_keeps_the_bad_file_errors(tmp_path):
    path = tmp_path / "truncated.jpg"
    path.write_bytes(jpeg(photo((400, 300)))[:2000])
    for decode in DECODES:
        with pytest.raises(Exception, match=r"truncated|cannot decode"):
            load_pixels(path, SPEC, decode=decode)


# -- the choice and its record --------------------------------------------------------------------


def test_decode_names_are_checked():
    assert check_decode("fast") == FAST
    with pytest.raises(ValueError, match="unknown decode 'quick'; expected one of: exact, fast"):
        check_decode("quick")
    with pytest.raises(ValueError, match="unknown decode"):
        load_pixels("x.jpg", SPEC, decode="quick")
    # an error a user can cause (README): an OnnxEdgeError too, not a bare ValueError
    from onnxedge.runtime.errors import OnnxEdgeError

    with pytest.raises(OnnxEdgeError, match="unknown decode 'quick'"):
        check_decode("quick")


def test_the_default_decode_is_the_one_the_model_was_trained_with():
    assert trained_decode(SPEC) == EXACT
    assert trained_decode({**SPEC, "decode": "fast"}) == FAST
    with pytest.raises(Exception, match="expected decode exact or fast, found 'turbo'"):
        trained_decode({**SPEC, "decode": "turbo"})


def test_fast_is_vouched_for_by_training_or_a_passed_gate():
    assert not fast_decode_vouched({"preprocessing": SPEC})
    assert fast_decode_vouched({"preprocessing": {**SPEC, "decode": "fast"}})
    assert fast_decode_vouched({"preprocessing": SPEC, "decodes": {"fast": {"gated": True}}})
    assert not fast_decode_vouched({"preprocessing": SPEC, "decodes": {"fast": {"gated": False}}})


def test_the_classifier_decodes_as_asked(smile_bundle, tmp_path, caplog):
    path = tmp_path / "photo.jpg"
    photo((640, 480)).save(path, quality=90)
    exact = Classifier.from_bundle(smile_bundle, provider="cpu", threads=1)
    assert exact.decode == EXACT
    with caplog.at_level("WARNING"):
        fast = Classifier.from_bundle(smile_bundle, provider="cpu", threads=1, decode="fast")
    assert fast.decode == FAST and "not gated on this bundle" in caplog.text
    assert np.array_equal(exact.preprocess(path), load_image(path, exact.preprocessing))
    assert np.array_equal(fast.pixels(path), load_pixels(path, SPEC, decode=FAST))
    (result,) = fast.predict_files([path])
    (direct,) = fast.predict_array(fast.preprocess(path)[None])
    assert result.prediction == direct
    with pytest.raises(ValueError, match="unknown decode"):
        Classifier.from_bundle(smile_bundle, decode="quick")


def test_predict_and_evaluate_take_decode(smile_bundle, tmp_path):
    from click.testing import CliRunner

    from onnxedge.runtime.cli import main

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        photo((640, 480), i).save(paths[-1], quality=90)
    runner = CliRunner()
    lines = {}
    for decode in DECODES:
        result = runner.invoke(
            main, ["predict", str(smile_bundle), str(tmp_path), "--decode", decode]
        )
        assert result.exit_code == 0, result.output
        lines[decode] = result.stdout.splitlines()
    assert len(lines[EXACT]) == len(lines[FAST]) == 3
    clf = Classifier.from_bundle(smile_bundle, provider="cpu", decode=FAST)
    results = clf.predict_files(paths)
    want = [
        f"{p}\t{r.prediction.probability:.4f}\t{r.prediction.label}"
        for p, r in zip(paths, results, strict=True)
    ]
    assert lines[FAST] == want
    result = runner.invoke(main, ["predict", str(smile_bundle), str(tmp_path), "--decode", "quick"])
    assert result.exit_code == 2 and "'quick' is not one of 'exact', 'fast'" in result.output
    result = runner.invoke(main, ["evaluate", "--help"])
    assert "--decode [exact|fast]" in result.output
