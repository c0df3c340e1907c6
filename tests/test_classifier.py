"""`Classifier`: a verified bundle, external data confined to it, validated batches, the same
results from many threads as from one."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from onnxedge.runtime.bundle.hashing import sha256_file
from onnxedge.runtime.bundle.reader import MANIFEST, MODEL
from onnxedge.runtime.classifier.classifier import (
    Classifier,
    FileResult,
    Prediction,
    check_external_data,
)
from onnxedge.runtime.classifier.preprocess import ImageReadError, load_image
from onnxedge.runtime.errors import ArgumentError, BundleError, OnnxEdgeError


@pytest.fixture(scope="module")
def clf(smile_bundle: Path) -> Classifier:
    return Classifier.from_bundle(smile_bundle, provider="cpu", threads=1)


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 64, 64), dtype=np.float32)


def reference_probabilities(bundle: Path, x: np.ndarray) -> np.ndarray:
    """The model run by ONNX Runtime directly, without onnxedge."""
    session = ort.InferenceSession(str(bundle / MODEL), providers=["CPUExecutionProvider"])
    return session.run(["prob"], {"input": x})[0][:, 0]


# -- loading --------------------------------------------------------------------------------------


def test_from_bundle_reads_the_manifest(clf, smile_bundle):
    assert clf.provider == "CPUExecutionProvider"
    assert clf.session.get_providers()[0] == "CPUExecutionProvider"
    assert clf.input_spec.name == "input" and clf.input_spec.shape == ("batch", 3, 64, 64)
    assert clf.output_spec.name == "prob" and clf.input_spec.dtype == "float32"
    manifest = json.loads((smile_bundle / MANIFEST).read_text())
    assert clf.threshold == manifest["labels"]["threshold"]
    assert dict(clf.preprocessing) == manifest["preprocessing"]


def test_auto_provider_says_which_it_uses(smile_bundle):
    clf = Classifier.from_bundle(smile_bundle, provider="auto", threads=1)
    assert clf.provider in ort.get_available_providers()
    assert clf.session.get_providers()[0] == clf.provider
    assert clf.provider in ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_cuda_that_cannot_load_says_what_to_do(smile_bundle):
    try:
        clf = Classifier.from_bundle(smile_bundle, provider="cuda", threads=1)
    except OnnxEdgeError as e:
        # What to do, in one line; the loader's own message is logged at -v.
        assert "the CUDA execution provider, which did not load here" in str(e)
        assert "install onnxedge[cuda] on a GPU machine, or use --providers cpu here" in str(e)
    else:  # a machine where the CUDA EP loads
        assert clf.provider == "CUDAExecutionProvider"
        assert clf.session.get_providers()[0] == "CUDAExecutionProvider"


def test_unknown_provider(smile_bundle):
    for provider in ("tpu", None, 3):  # a ValueError for Python callers, as RUNTIME.md says
        with pytest.raises(ArgumentError, match=r"unknown provider .*; expected one of: auto, cpu"):
            Classifier.from_bundle(smile_bundle, provider=provider)


def test_hash_mismatch_is_refused_before_a_session(bundle_copy):
    data = bytearray((bundle_copy / MODEL).read_bytes())
    data[-1] ^= 0xFF
    (bundle_copy / MODEL).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the manifest: expected sha256"):
        Classifier.from_bundle(bundle_copy, provider="cpu")


def test_incomplete_bundle_is_refused(bundle_copy):
    (bundle_copy / MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        Classifier.from_bundle(bundle_copy, provider="cpu")


def test_manifest_input_name_must_match_the_model(bundle_copy):
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    manifest["input"]["name"] = "pixels"
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match="input 'pixels' does not match the model's inputs: 'input'"
    ):
        Classifier.from_bundle(bundle_copy, provider="cpu")


# -- external data --------------------------------------------------------------------------------


def externalize(bundle: Path, location: str, *, data_dir: Path | None = None) -> str:
    """Move the largest initializer of the bundle's model to external data at ``location``
    (relative to ``data_dir``, default the bundle), and re-hash model.onnx in the manifest so that
    only the external-data check stands between the model and a session. Returns the file name."""
    model = onnx.load(str(bundle / MODEL))
    tensor = max(model.graph.initializer, key=lambda t: onnx.numpy_helper.to_array(t).nbytes)
    data = onnx.numpy_helper.to_array(tensor).tobytes()
    target = (data_dir or bundle) / location
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    onnx.external_data_helper.set_external_data(tensor, location, offset=0, length=len(data))
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    (bundle / MODEL).write_bytes(model.SerializeToString())
    rehash(bundle, MODEL)
    return location


def rehash(bundle: Path, name: str) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    path = bundle / name
    manifest["files"][name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def open_bundle(path: Path):
    from onnxedge.runtime.bundle.reader import Bundle

    return Bundle.open(path)


def test_external_data_inside_the_bundle_and_listed_loads(bundle_copy, smile_bundle):
    externalize(bundle_copy, "weights.bin")
    rehash(bundle_copy, "weights.bin")
    assert check_external_data(open_bundle(bundle_copy)) == ["weights.bin"]
    clf = Classifier.from_bundle(bundle_copy, provider="cpu", threads=1)
    x = batch(3)
    np.testing.assert_array_equal(
        clf.probabilities(x), reference_probabilities(smile_bundle, x).astype(np.float64)
    )


def test_external_data_outside_the_bundle_is_refused(bundle_copy):
    externalize(bundle_copy, "../outside.bin")
    assert (bundle_copy.parent / "outside.bin").is_file()
    with pytest.raises(BundleError, match=r"at '\.\./outside\.bin', which resolves to .*outside"):
        Classifier.from_bundle(bundle_copy, provider="cpu")


def test_external_data_at_an_absolute_path_is_refused(bundle_copy, tmp_path):
    location = str(tmp_path / "abs.bin")
    externalize(bundle_copy, location, data_dir=Path("/"))
    with pytest.raises(BundleError, match="at the absolute path"):
        Classifier.from_bundle(bundle_copy, provider="cpu")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_external_data_through_a_symlink_out_is_refused(bundle_copy, tmp_path):
    externalize(bundle_copy, "link.bin")
    outside = tmp_path / "elsewhere.bin"
    (bundle_copy / "link.bin").rename(outside)
    (bundle_copy / "link.bin").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        Classifier.from_bundle(bundle_copy, provider="cpu")


def test_external_data_not_in_the_manifest_is_refused(bundle_copy):
    externalize(bundle_copy, "weights.bin")
    with pytest.raises(BundleError, match="which the manifest does not list"):
        Classifier.from_bundle(bundle_copy, provider="cpu")


def test_external_data_that_does_not_match_the_manifest_is_refused(bundle_copy):
    externalize(bundle_copy, "weights.bin")
    rehash(bundle_copy, "weights.bin")
    data = bytearray((bundle_copy / "weights.bin").read_bytes())
    data[0] ^= 0xFF
    (bundle_copy / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights\.bin does not match the manifest"):
        Classifier.from_bundle(bundle_copy, provider="cpu")


# -- arrays ---------------------------------------------------------------------------------------


def test_predict_array_is_the_model(clf, smile_bundle):
    x = batch(5)
    predictions = clf.predict_array(x)
    expected = reference_probabilities(smile_bundle, x)
    assert [p.probability for p in predictions] == [float(v) for v in expected]
    for p in predictions:
        assert isinstance(p, Prediction) and p.threshold == 0.5
        assert p.positive == (p.probability >= 0.5)
        assert p.label == ("smiling" if p.positive else "not smiling")


def test_threshold_decides_the_label(clf):
    x = batch(4)
    assert all(p.positive and p.label == "smiling" for p in clf.predict_array(x, threshold=0.0))
    assert not any(p.positive for p in clf.predict_array(x, threshold=1.0))
    middle = float(np.median(clf.probabilities(x)))
    flags = [p.positive for p in clf.predict_array(x, threshold=middle)]
    assert 0 < sum(flags) < len(flags)
    with pytest.raises(ValueError, match=r"expected a threshold in \[0, 1\], got 1.5"):
        clf.predict_array(x, threshold=1.5)


def test_empty_batch_is_an_empty_result_without_a_run(clf):
    calls = []

    class Spy:
        def __getattr__(self, name):
            return getattr(clf.session, name)

        def run(self, *args, **kw):
            calls.append(args)
            return clf.session.run(*args, **kw)

    spied = Classifier(Spy(), clf.manifest, provider=clf.provider)
    assert spied.predict_array(np.zeros((0, 3, 64, 64), np.float32)) == []
    assert calls == []
    assert len(spied.predict_array(batch(2))) == 2 and len(calls) == 1


EXPECTED = r"expected a float32 array of shape \[N, 3, 64, 64\] \(input 'input'\), got "


@pytest.mark.parametrize(
    "bad,found",
    [
        (np.zeros((3, 64, 64), np.float32), r"a float32 array of shape \[3, 64, 64\] \(rank 3\)"),
        (
            np.zeros((1, 1, 3, 64, 64), np.float32),
            r"a float32 array of shape \[1, 1, 3, 64, 64\] \(rank 5\)",
        ),
        (
            np.zeros((2, 1, 64, 64), np.float32),
            r"a float32 array of shape \[2, 1, 64, 64\] \(axis 1 is 1\)",
        ),
        (
            np.zeros((2, 3, 32, 64), np.float32),
            r"a float32 array of shape \[2, 3, 32, 64\] \(axis 2 is 32\)",
        ),
        (
            np.zeros((2, 64, 64, 3), np.float32),
            r"a float32 array of shape \[2, 64, 64, 3\] \(axis 1 is 64\)",
        ),
        (np.zeros((2, 3, 64, 64), np.float64), r"a float64 array of shape \[2, 3, 64, 64\]$"),
        (np.zeros((2, 3, 64, 64), np.float16), r"a float16 array"),
        (np.zeros((2, 3, 64, 64), np.uint8), r"a uint8 array"),
        ([[0.0]], r"a list, not a numpy array"),
    ],
)
def test_wrong_batches_name_the_spec_and_what_they_are(clf, bad, found):
    with pytest.raises(ValueError, match=EXPECTED + found):
        clf.predict_array(bad)


@pytest.mark.parametrize("value,counts", [(np.nan, "1 NaN and 0 inf"), (np.inf, "0 NaN and 1 inf")])
def test_non_finite_values_are_refused(clf, value, counts):
    x = batch(2)
    x[1, 2, 3, 4] = value
    with pytest.raises(ValueError, match=f"with finite values, got {counts} values"):
        clf.predict_array(x)


def test_non_contiguous_batches_are_fine(clf):
    x = np.ascontiguousarray(batch(4)[:, :, :, ::-1])
    view = batch(4)[::2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(clf.probabilities(view), clf.probabilities(view.copy()))
    assert len(clf.predict_array(x)) == 4


def test_many_threads_give_the_serial_results(smile_bundle):
    """8 threads x 25 calls on one classifier (ORT's default intra-op threads) against serial."""
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    inputs = [batch(1 + i % 4, seed=i) for i in range(10)]
    serial = [clf.probabilities(x) for x in inputs]
    started = threading.Barrier(8)

    def work(job: int) -> tuple[int, np.ndarray]:
        if job < 8:
            started.wait()  # all eight threads are in flight before the first call
        i = job % len(inputs)
        return i, clf.probabilities(inputs[i])

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(200)))
    assert len(results) == 200
    for i, probabilities in results:
        np.testing.assert_array_equal(probabilities, serial[i])


# -- images ---------------------------------------------------------------------------------------


def write_images(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i, size in enumerate([(64, 64), (178, 218), (300, 100), (50, 80), (64, 64)]):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_predict_images_paths_and_pil_images(clf, tmp_path):
    paths = write_images(tmp_path)
    expected = clf.predict_array(np.stack([load_image(p, clf.preprocessing) for p in paths]))
    mixed = [paths[0], str(paths[1]), Image.open(paths[2]), paths[3], Image.open(paths[4])]
    assert clf.predict_images(mixed, batch_size=2) == expected
    assert clf.predict_images([]) == []


def test_predict_images_raises_on_a_bad_file(clf, tmp_path):
    (tmp_path / "bad.png").write_text("no")
    with pytest.raises(ImageReadError, match=r"bad\.png: expected an image file, found no format"):
        clf.predict_images([tmp_path / "bad.png"])
    with pytest.raises(TypeError, match="expected a file path or a PIL image, got int"):
        clf.predict_images([3])


def test_predict_files_keeps_order_and_reports_bad_files(clf, tmp_path):
    good = write_images(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("no")
    order = [good[0], tmp_path / "empty.jpg", good[1], good[2], tmp_path / "text.png", good[3]]
    results = list(clf.predict_files(order, batch_size=2))
    assert [r.file for r in results] == [str(p) for p in order]
    assert [bool(r) for r in results] == [True, False, True, True, False, True]
    assert results[1].error == "expected an image file, found an empty file (0 bytes)"
    assert results[1].to_dict() == {"file": str(order[1]), "error": results[1].error}
    expected = clf.predict_images([good[0], good[1], good[2], good[3]])
    assert [r.prediction for r in results if r] == expected
    assert set(results[0].to_dict()) == {"file", "probability", "label", "positive"}


def test_predict_files_streams(clf, tmp_path):
    """One file after another, at most one batch of paths is read ahead of the results: memory
    stays flat (with decoding threads, a window more: test_decode.py)."""
    paths = write_images(tmp_path) * 20
    consumed = 0

    def source():
        nonlocal consumed
        for p in paths:
            consumed += 1
            yield p

    results = clf.predict_files(source(), batch_size=3, decode_threads=1)
    assert consumed == 0  # nothing happens before the first result is asked for
    first = next(results)
    assert isinstance(first, FileResult) and first
    assert consumed == 3
    rest = list(results)
    assert len(rest) == len(paths) - 1 and consumed == len(paths)


def test_predict_files_batch_size_must_be_positive(clf):
    with pytest.raises(ValueError, match="batch size of at least 1, got 0"):
        list(clf.predict_files([], batch_size=0))


def test_predict_images_refuses_a_batch_size_below_one(smile_bundle):
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    with pytest.raises(ValueError, match="expected a batch size of at least 1, got 0"):
        clf.predict_images([np.zeros((64, 64, 3), dtype=np.uint8)], batch_size=0)


# -- outputs that are not probabilities, chunks, arguments ---------------------------------------


class StubSession:
    """Stands in for an ONNX Runtime session: returns ``values`` (one per row, cycling) and
    records the rows of each call."""

    def __init__(self, clf: Classifier, values: list[float]) -> None:
        self._clf = clf
        self.values = values
        self.calls: list[int] = []

    def get_inputs(self):
        return self._clf.session.get_inputs()

    def get_outputs(self):
        return self._clf.session.get_outputs()

    def run(self, names, feeds):
        (x,) = feeds.values()
        self.calls.append(len(x))
        column = [self.values[i % len(self.values)] for i in range(len(x))]
        return [np.asarray(column, dtype=np.float32)[:, None]]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1.5, -0.25])
def test_an_output_that_is_not_a_probability_is_an_error_not_a_label(clf, bad):
    from onnxedge.runtime.classifier.classifier import ModelOutputError

    stub = Classifier(StubSession(clf, [0.25, bad, 0.75]), clf.manifest, provider="stub")
    with pytest.raises(ModelOutputError, match=r"is not a probability in \[0, 1\] for 2 of 6 "):
        stub.predict_array(batch(6))
    try:
        stub.probabilities(batch(6))
    except ModelOutputError as e:
        assert e.rows == (1, 4) and "no label is given" in str(e)
    assert [p.probability for p in stub.predict_array(batch(1))] == [0.25]


def test_predict_files_reports_a_non_finite_output_for_that_file_only(clf, tmp_path):
    paths = write_images(tmp_path)
    stub = Classifier(StubSession(clf, [0.25, np.nan]), clf.manifest, provider="stub")
    results = list(stub.predict_files(paths, batch_size=2))
    assert [bool(r) for r in results] == [True, False, True, False, True]
    assert results[1].error == (
        "the model's output 'prob' is nan, not a probability in [0, 1]; no label is given"
    )
    assert results[1].prediction is None


def test_a_model_with_nan_weights_labels_nothing(bundle_copy, tmp_path):
    """The real thing: a bundle whose weights hold a NaN (its sha256 re-recorded)."""
    from onnxedge.runtime.classifier.classifier import ModelOutputError

    model = onnx.load(str(bundle_copy / MODEL))
    bias = next(t for t in model.graph.initializer if onnx.numpy_helper.to_array(t).size == 1)
    bias.CopyFrom(onnx.numpy_helper.from_array(np.array([np.nan], np.float32), bias.name))
    (bundle_copy / MODEL).write_bytes(model.SerializeToString())
    rehash(bundle_copy, MODEL)
    nan_clf = Classifier.from_bundle(bundle_copy, provider="cpu", threads=1)
    with pytest.raises(ModelOutputError, match="for 3 of 3 images"):
        nan_clf.predict_array(batch(3))
    results = list(nan_clf.predict_files(write_images(tmp_path)[:2]))
    assert [r.error for r in results] == [
        "the model's output 'prob' is nan, not a probability in [0, 1]; no label is given"
    ] * 2


def test_predict_array_runs_in_chunks_with_the_same_results(clf):
    stub = StubSession(clf, [0.5])
    Classifier(stub, clf.manifest, provider="stub").predict_array(batch(70), batch_size=32)
    assert stub.calls == [32, 32, 6]
    x = batch(70, seed=3)
    np.testing.assert_array_equal(
        clf.probabilities(x, batch_size=8), clf.probabilities(x, batch_size=70)
    )
    assert [p.probability for p in clf.predict_array(x)] == list(clf.probabilities(x))


def test_a_large_batch_never_reaches_the_model_whole(clf):
    """10,000 images (as a broadcast view: no 491 MB in the test) go through in calls of the
    default batch size, so what the model allocates per call is bounded."""
    from onnxedge.runtime.classifier.classifier import DEFAULT_BATCH_SIZE

    stub = StubSession(clf, [0.5])
    many = np.broadcast_to(batch(1), (10_000, 3, 64, 64))
    predictions = Classifier(stub, clf.manifest, provider="stub").predict_array(many)
    assert len(predictions) == 10_000
    assert max(stub.calls) == DEFAULT_BATCH_SIZE and sum(stub.calls) == 10_000


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"threads": 0}, r"expected threads from 1 to 1024 or None, got 0"),
        ({"threads": -2}, r"got -2"),
        ({"threads": 1.5}, r"got 1\.5"),
        ({"threads": True}, r"got True"),
        ({"threads": "4"}, r"got '4'"),
        ({"threads": 2**31}, r"got 2147483648"),
        ({"threshold": float("nan")}, r"expected a threshold in \[0, 1\], got nan"),
        ({"threshold": "0.5"}, r"expected a threshold in \[0, 1\], got '0\.5'"),
        ({"threshold": True}, r"got True"),
        ({"threshold": float("inf")}, r"got inf"),
    ],
)
def test_from_bundle_checks_its_arguments_before_reading_the_bundle(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Classifier.from_bundle(tmp_path / "no bundle here", provider="cpu", **kwargs)


def test_an_unknown_provider_of_any_type_is_one_error(tmp_path):
    for provider in (None, 3, "tpu"):
        with pytest.raises(OnnxEdgeError, match="unknown provider"):
            Classifier.from_bundle(tmp_path, provider=provider)


@pytest.mark.parametrize(
    "method,kwargs,message",
    [
        ("predict_files", {"batch_size": 0}, "expected a batch size of at least 1, got 0"),
        ("predict_files", {"batch_size": 2.5}, "got 2.5"),
        ("predict_files", {"max_pixels": 0}, "expected max_pixels of at least 1 or None, got 0"),
        ("predict_files", {"threshold": -0.1}, r"expected a threshold in \[0, 1\]"),
        ("predict_images", {"max_pixels": "big"}, "got 'big'"),
        ("predict_images", {"batch_size": np.int64(0)}, "batch size of at least 1, got"),
        ("predict_array", {"batch_size": 0}, "got 0"),
    ],
)
def test_method_arguments_are_checked_at_the_call(clf, method, kwargs, message):
    args = (batch(1),) if method == "predict_array" else ([],)
    with pytest.raises(ValueError, match=message):
        getattr(clf, method)(*args, **kwargs)  # no iteration needed: checked before the first


def test_numpy_numbers_are_arguments_too(clf):
    x = batch(3)
    assert clf.predict_array(x, np.float32(0.5), batch_size=np.int64(2)) == clf.predict_array(x)
