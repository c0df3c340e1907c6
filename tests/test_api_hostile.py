"""The library API given what a caller may pass by mistake: a name no file can have (a NUL byte,
a lone surrogate, an image's bytes for its path) is that file's error result and the others go
on; a PIL image over ``max_pixels`` is refused as its file would be; arguments of the wrong
kind are `ArgumentError`s (a `ValueError`) before the bundle is read; every message is one
line."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import onnxedge.runtime as api
from onnxedge.runtime import ArgumentError, BundleError, Classifier, ImageReadError
from onnxedge.runtime.classifier.preprocess import load_pixels


@pytest.fixture(scope="module")
def clf(smile_bundle):
    return Classifier.from_bundle(smile_bundle, provider="cpu")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (80, 70, 3), np.uint8)).save(folder / f"{i}.jpg")
    return sorted(str(p) for p in folder.iterdir())


@pytest.mark.parametrize(
    "pool",
    [{}, {"decode_threads": 2}, {"decode_processes": 2}],
    ids=["default", "threads", "procs"],
)
def test_a_name_no_file_can_have_is_its_own_error_and_the_others_go_on(clf, good, pool):
    names = [good[0], "a\0b.jpg", "\ud800.jpg", good[1].encode(), good[2]]
    results = list(clf.predict_files(names, batch_size=2, **pool))
    assert [r.file for r in results] == [good[0], "a\0b.jpg", "\ud800.jpg", good[1], good[2]]
    assert [bool(r) for r in results] == [True, False, False, True, True]
    assert results[1].error.startswith("expected a file name, found a NUL byte in it")
    assert results[2].error == (
        "expected a file name, found '\\ud800', which no file name holds (surrogates not allowed)"
    )
    assert all(isinstance(r.file, str) for r in results)  # bytes given: a str name, as predict


def test_an_images_bytes_for_its_path_is_one_short_line(clf, good):
    with open(good[0], "rb") as f:
        data = f.read()
    with pytest.raises(ImageReadError) as e:
        clf.predict_images([data])
    message = str(e.value)
    assert "\n" not in message and len(message) < 300 and "a NUL byte in it" in message


def test_a_file_name_in_a_message_is_one_line():
    assert str(ImageReadError("tab\there\nx.jpg", "missing")) == "tab\\there\\nx.jpg: missing"
    assert str(ImageReadError(b"x\xff.jpg", "missing")) == "x\\377.jpg: missing"
    assert str(ImageReadError("plain/name.jpg", "missing")) == "plain/name.jpg: missing"


@pytest.mark.parametrize("name", ["b\0", "\ud800"])
def test_a_bundle_path_no_file_can_have_is_a_bundle_error(name):
    with pytest.raises(BundleError, match="which no file name can be"):
        Classifier.from_bundle(name)


def test_a_pil_image_over_max_pixels_is_refused_before_it_is_decoded(clf, tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buffer, format="PNG")
    lazy = Image.open(io.BytesIO(buffer.getvalue()))  # not decoded yet
    with pytest.raises(ImageReadError, match="300x200 is 60,000 pixels, more than the limit of"):
        clf.predict_images([lazy], max_pixels=50_000)
    assert len(clf.predict_images([lazy], max_pixels=60_000)) == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"variant": ""}, "expected a variant name such as"),
        ({"variant": 3}, "expected a variant name such as"),
        ({"tuned": 1}, "expected tuned as True, False, None or a tuning file's path, got 1"),
        ({"tuned": 2.5}, "expected tuned as True, False, None or a tuning file's path"),
        ({"batch_size": 0}, "expected a batch size of at least 1, got 0"),  # with no tuned too
        ({"batch_size": 2.5, "tuned": True}, "expected a batch size of at least 1, got 2.5"),
    ],
)
def test_arguments_of_the_wrong_kind_are_refused_before_the_bundle_is_read(
    tmp_path, arguments, message
):
    with pytest.raises(ArgumentError, match=message):  # no bundle there: read, it would say so
        Classifier.from_bundle(tmp_path / "missing", **arguments)


@pytest.mark.parametrize("max_pixels", ["100", -5, 0, 2.5])
def test_load_pixels_checks_max_pixels_itself(good, max_pixels):
    with pytest.raises(ArgumentError, match="expected max_pixels of at least 1 or None"):
        load_pixels(good[0], {}, max_pixels=max_pixels)


def test_batch_processes_refused_with_the_reason_that_holds(smile_bundle, good):
    threaded = Classifier.from_bundle(smile_bundle, provider="cpu", threads=1)
    with pytest.raises(
        ArgumentError, match=r"for batch_processes; found one with its threads given$"
    ):
        list(threaded.predict_files(good, batch_processes=2))


def test_the_error_kinds_and_file_steps_are_public():
    for name in ("ArgumentError", "BundleError", "ImageReadError", "ModelOutputError"):
        assert issubclass(getattr(api, name), api.OnnxEdgeError), name
    assert issubclass(api.EngineUnavailable, api.ProviderUnavailable)
    assert issubclass(api.ArgumentError, ValueError)
    assert api.load_pixels is load_pixels and api.MAX_PIXELS == 64_000_000


@pytest.mark.parametrize(
    ("spec", "found"),
    [
        (None, "found None"),
        ({}, "found resize None"),
        ({"resize": "64,64"}, "found resize '64,64'"),
        ({"resize": [64, 0]}, r"found resize \[64, 0\]"),
        ({"resize": [64.0, 64.0]}, r"found resize \[64.0, 64.0\]"),
    ],
)
@pytest.mark.parametrize("decode", ["exact", "fast"])
def test_a_spec_without_its_resize_is_an_argument_error_not_a_key_error(good, spec, found, decode):
    """`load_image` and `load_pixels` take a manifest's preprocessing from the caller: None was an
    AttributeError, a spec without ``resize`` a KeyError, deep inside the decode."""
    for load in (api.load_image, load_pixels):
        with pytest.raises(ArgumentError, match=f"with resize \\[height, width\\], {found}$"):
            load(good[0], spec, decode=decode)
    assert load_pixels(good[0], {"resize": (32, 48)}, decode=decode).shape == (32, 48, 3)
