"""Property tests (hypothesis) of the two doors user data comes in by: `Classifier.predict_array`
over shapes, dtypes and values, and the image reader (`load_image`) over modes, formats, sizes,
contents and damaged files. Either the documented result or the documented error, nothing else.

The examples are derandomized, so CI sees the same ones on every run; run with
``HYPOTHESIS_PROFILE=explore`` for many more, freshly drawn.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from onnxedge.runtime.bundle.reader import MODEL
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.classifier.preprocess import ImageReadError, load_image

settings.register_profile(
    "ci",
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SPEC = "expected a float32 array of shape [N, 3, 64, 64] (input 'input')"


@pytest.fixture(scope="module")
def clf(smile_bundle: Path) -> Classifier:
    return Classifier.from_bundle(smile_bundle, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def direct(smile_bundle: Path):
    """The model under ONNX Runtime without onnxedge, for the expected probabilities."""
    return ort.InferenceSession(str(smile_bundle / MODEL), providers=["CPUExecutionProvider"])


# -- predict_array --------------------------------------------------------------------------------

DTYPES = st.sampled_from(["float32", "float64", "float16", "int64", "uint8", "bool", "complex64"])
RIGHT_SHAPE = st.tuples(st.integers(0, 3), st.just(3), st.just(64), st.just(64))
NEAR_SHAPE = st.tuples(
    st.integers(0, 3), st.sampled_from([1, 3, 4, 64]), st.sampled_from([3, 63, 64]), st.just(64)
)
OTHER_SHAPE = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)


@st.composite
def batches(draw: st.DrawFn) -> np.ndarray:
    """Mostly the right spec with arbitrary values (NaN, infinities, huge, subnormal), often a
    near miss of the shape or the dtype, sometimes anything at all."""
    dtype = np.dtype(draw(st.one_of(st.just("float32"), DTYPES)))
    shape = draw(st.one_of(RIGHT_SHAPE, NEAR_SHAPE, OTHER_SHAPE))
    elements = hnp.from_dtype(dtype)  # with NaN and infinities where the dtype has them
    array = draw(hnp.arrays(dtype, shape, elements=elements, fill=elements))
    if draw(st.booleans()):  # a strided view rather than a contiguous array
        array = np.repeat(array, 2, axis=0)[::2] if array.ndim else array
    return array


@given(batch=batches())
def test_predict_array_gives_the_model_or_the_spec_error(clf, direct, batch):
    valid = (
        batch.dtype == np.float32
        and batch.ndim == 4
        and batch.shape[1:] == (3, 64, 64)
        and bool(np.isfinite(batch).all())
    )
    if not valid:
        with pytest.raises(ValueError) as e:
            clf.predict_array(batch)
        message = str(e.value)
        assert message.startswith((f"{SPEC}, got a ", f"{SPEC} with finite values, got ")), message
        return
    with np.errstate(over="ignore", invalid="ignore"):
        predictions = clf.predict_array(batch, batch_size=2)
    assert len(predictions) == len(batch)
    if len(batch):
        expected = direct.run(None, {"input": np.ascontiguousarray(batch)})[0][:, 0]
        np.testing.assert_allclose([p.probability for p in predictions], expected, atol=1e-6)
    for p in predictions:
        assert 0.0 <= p.probability <= 1.0
        assert p.positive == (p.probability >= clf.threshold)
        assert p.label == ("smiling" if p.positive else "not smiling")


# -- the image reader -----------------------------------------------------------------------------

MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "I", "I;16", "F", "CMYK", "YCbCr", "LAB", "HSV"]
FORMATS = ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM"]


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    """An image of any mode and size (1 to 300 a side) with random pixels, as any format PIL
    writes it in (combinations PIL cannot write are not drawn)."""
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    image = rgb.convert(mode) if mode not in ("I;16", "F", "I") else _wide_gray(rng, mode, rgb)
    if mode == "F" and draw(st.booleans()):
        image.putpixel((0, 0), float(draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        assume(False)  # PIL cannot write this mode in this format
    return buffer.getvalue()


def _wide_gray(rng: np.random.Generator, mode: str, rgb: Image.Image) -> Image.Image:
    h, w = rgb.height, rgb.width
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**31), 2**31 - 1, (h, w), dtype=np.int32))
    return Image.fromarray(rng.normal(0.5, 2.0, (h, w)).astype(np.float32))


def assert_preprocessed(array: np.ndarray) -> None:
    """What `load_image` promises for the default preprocessing (mean 0, std 1)."""
    assert array.dtype == np.float32 and array.shape == (3, 64, 64)
    assert np.isfinite(array).all()
    assert array.min() >= 0.0 and array.max() <= 1.0


def read(tmp_path: Path, data: bytes, clf: Classifier) -> np.ndarray | ImageReadError:
    path = tmp_path / "image"
    path.write_bytes(data)
    try:
        return load_image(path, clf.preprocessing)
    except ImageReadError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e), str(e)
        return e


@given(data=image_files())
def test_any_image_pil_writes_is_read_or_refused_with_a_reason(clf, tmp_path, data):
    result = read(tmp_path, data, clf)
    if isinstance(result, np.ndarray):
        assert_preprocessed(result)


@given(
    data=image_files(), cut=st.floats(0.0, 1.0), flips=st.lists(st.integers(0, 2**31), max_size=8)
)
def test_a_damaged_image_is_read_or_refused_never_anything_else(clf, tmp_path, data, cut, flips):
    """Truncated at any point, and bytes flipped anywhere: a clean `ImageReadError` or a valid
    array (some damage leaves an image PIL decodes), never another exception."""
    damaged = bytearray(data[: int(len(data) * cut)])
    for position in flips:
        if damaged:
            damaged[position % len(damaged)] ^= 0xFF
    result = read(tmp_path, bytes(damaged), clf)
    if isinstance(result, np.ndarray):
        assert_preprocessed(result)


@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_are_refused_or_read(clf, tmp_path, data):
    result = read(tmp_path, data, clf)
    if isinstance(result, np.ndarray):
        assert_preprocessed(result)
