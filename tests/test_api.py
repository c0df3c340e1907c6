"""The public Python API: `onnxedge.runtime` and `onnxedge.export` name one function per command,
import lazily (``import onnxedge.runtime`` loads neither torch nor onnxruntime), and the functions
return the result objects the commands print."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

import onnxedge.export
import onnxedge.runtime

HEAVY = ("torch", "onnxruntime", "onnx", "numpy", "PIL")
# A public name whose module imports numpy at least.
_HEAVY_NAME = {"onnxedge.runtime": "Classifier", "onnxedge.export": "export_bundle"}


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("package", ["onnxedge.runtime", "onnxedge.export"])
def test_importing_the_api_loads_no_heavy_module(package):
    loaded = _modules_after(f"import {package}")
    assert package in loaded
    assert not [m for m in HEAVY if m in loaded], f"import {package} loaded {sorted(loaded)}"
    # the check sees a heavy module where one is loaded: a public name resolved
    resolved = _modules_after(f"import {package}; {package}.{_HEAVY_NAME[package]}")
    assert [m for m in HEAVY if m in resolved]


# What predict and evaluate load only with --tuned (tune's resolution imports the benchmark).
TUNING = ("onnxedge.runtime.tune", "onnxedge.runtime.bench")


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_command_loads_the_tuning_code_only_with_tuned(command):
    module = f"onnxedge.runtime.cli.{command}"
    loaded = _modules_after(f"import {module}")
    assert module in loaded
    assert not [m for m in TUNING if m in loaded], f"import {module} loaded the tuning code"
    # the check sees the tuning code where --tuned resolves it
    resolved = _modules_after(f"import {module}; from onnxedge.runtime.tune import resolve_tuned")
    assert all(m in resolved for m in TUNING)


@pytest.mark.parametrize("package", [onnxedge.runtime, onnxedge.export])
def test_every_public_name_resolves(package):
    assert package.__all__ == sorted(set(package.__all__))
    import importlib

    for room in ("bench", "bundle", "check", "classifier", "data", "parity", "tune", "variants"):
        importlib.import_module(f"onnxedge.runtime.{room}")  # a subpackage must not shadow a name
    for name in package.__all__:
        value = getattr(package, name)
        assert not isinstance(value, types.ModuleType), f"{package.__name__}.{name} is a module"
        assert (value.__doc__ or "").strip(), f"{package.__name__}.{name} has no docstring"
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        package.nope  # noqa: B018


def test_the_runtime_api_names_what_a_user_imports():
    from onnxedge.runtime import Bundle, Classifier, OnnxEdgeError
    from onnxedge.runtime.bundle.reader import Bundle as ReaderBundle
    from onnxedge.runtime.classifier.classifier import Classifier as TheClassifier
    from onnxedge.runtime.errors import OnnxEdgeError as TheError

    assert (Bundle, Classifier, OnnxEdgeError) == (ReaderBundle, TheClassifier, TheError)
    for command in ("check_path", "check_parity", "benchmark", "predict", "evaluate_bundle"):
        assert command in onnxedge.runtime.__all__
    for command in ("optimize_bundle", "open_dataset", "write_faces", "tune_bundle", "pack_bundle"):
        assert command in onnxedge.runtime.__all__
    for command in ("export_bundle", "export_model", "simplify_file", "train", "import_bundle"):
        assert command in onnxedge.export.__all__


def api_tables(*packages) -> dict[str, str]:
    """``onnxedge <command>`` -> the function the packages' docstring tables name for it."""
    row = re.compile(r"^\| ``onnxedge ([a-z ]+)`` \| `([a-z_]+)`", re.M)
    return {c: f for p in packages for c, f in row.findall(p.__doc__ or "")}


def test_every_command_has_its_function_in_the_api():
    """Each CLI command (and `data`'s subcommands) is a row of the API tables, and the function
    that row names is public."""
    import click

    from onnxedge.runtime.cli import main

    commands = []
    for name, command in main.commands.items():
        if isinstance(command, click.Group):
            commands += [f"{name} {sub}" for sub in command.commands]
        else:
            commands.append(name)
    tables = api_tables(onnxedge.runtime, onnxedge.export)
    assert sorted(set(commands) - set(tables)) == []
    public = set(onnxedge.runtime.__all__) | set(onnxedge.export.__all__)
    assert sorted(f for f in tables.values() if f not in public) == []


def test_api_tables_finds_a_missing_command():
    class Doc:
        __doc__ = "| ``onnxedge pack`` | `pack_bundle` | `PackResult` |\n| ``onnxedge x`` | y |"

    assert api_tables(Doc) == {"pack": "pack_bundle"}


def test_check_parity_returns_the_report_the_command_prints(smile_bundle):
    from onnxedge.runtime import ParityResult, check_parity

    result = check_parity(smile_bundle, providers=["cpu"], batch_sizes=[1, 2])
    assert isinstance(result, ParityResult) and result
    assert [(r.provider, r.batch, r.status) for r in result.report.rows] == [
        ("cpu", 1, "passed"),
        ("cpu", 2, "passed"),
    ]
    assert result.model == smile_bundle / "model.onnx" and result.variant == "fp32"
    payload = result.to_dict()
    assert payload["variant"] == "fp32" and "localization" not in payload
    localized = check_parity(smile_bundle, providers=["cpu"], batch_sizes=[1], localize="always")
    assert localized.localized and len(localized.localizations) == 1
    assert len(localized.to_dict()["localization"]) == 1


def test_check_parity_refuses_arguments_that_do_not_go_together(smile_bundle, tmp_path):
    from onnxedge.runtime import OnnxEdgeError, check_parity

    with pytest.raises(OnnxEdgeError, match="a checkpoint is for the live reference"):
        check_parity(smile_bundle, checkpoint=tmp_path / "c.safetensors")
    with pytest.raises(OnnxEdgeError, match="precisions are OpenVINO's"):
        check_parity(smile_bundle, precisions=["bf16"])
    with pytest.raises(OnnxEdgeError, match="localize: expected one of failed, always"):
        check_parity(smile_bundle, localize="sometimes")


def test_check_parity_refuses_what_it_would_have_misread(smile_bundle):
    """A typo in ``reference`` ran the golden check as if asked for; a str of providers was read
    letter by letter; a batch size of 0 was looked up in the golden data; a negative or NaN
    tolerance failed every row with a bound of 1e+299."""
    from onnxedge.runtime import check_parity
    from onnxedge.runtime.errors import ArgumentError, OnnxEdgeError
    from onnxedge.runtime.parity import ToleranceOverrides

    for kwargs, message in [
        ({"reference": "Live"}, "reference: expected one of golden, live, got 'Live'"),
        ({"providers": "cpu"}, r"providers: expected a sequence such as \('cpu',\), got a str"),
        ({"batch_sizes": [0]}, "expected a batch size of at least 1, got 0"),
        ({"providers": None}, "providers: expected a sequence of names, got None"),
        ({"precisions": 3}, "precisions: expected a sequence of names, got 3"),
        # an against without localize was ignored
        ({"against": "int8"}, "against \\('int8'\\) goes with localize; got localize None"),
    ]:
        with pytest.raises(ArgumentError, match=message):
            check_parity(smile_bundle, **kwargs)
    # an unknown engine ran nothing: a falsy "nothing ran" result instead of the reason
    with pytest.raises(OnnxEdgeError, match="unknown engine 'onnx'; expected one of: onnxrun"):
        check_parity(smile_bundle, engines=["onnx"])
    for value in (-1.0, float("nan"), "1e-3", True):
        with pytest.raises(ArgumentError, match="atol: expected a finite number of at least 0"):
            ToleranceOverrides(atol=value)
    assert ToleranceOverrides(atol=0, rtol=1e-3, rounding_factor=2.0)


def test_predict_walks_folders_and_streams_results(smile_bundle, tmp_path):
    from onnxedge.runtime import FilePredictions, predict

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, (80, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    Image.fromarray(pixels).save(folder / "sub" / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    run = predict(smile_bundle, [folder, tmp_path / "broken.jpg"], provider="cpu")
    assert isinstance(run, FilePredictions) and run.classifier.provider == "CPUExecutionProvider"
    results = list(run)
    assert [r.file.rsplit("/", 1)[-1] for r in results] == ["a.png", "b.jpg", "broken.jpg"]
    assert [bool(r) for r in results] == [True, True, False]
    assert results[0].prediction is not None and results[1].prediction is not None
    assert results[2].error and results[2].prediction is None


def test_a_single_path_or_image_where_several_are_expected_is_a_type_error(smile_bundle, tmp_path):
    """A str is iterable: predict(B, "photo.jpg") classified "p", "h", ... and walked "/" as a
    folder; a single Path or PIL image failed deep inside the loop."""
    from onnxedge.runtime import Classifier, predict

    classifier = Classifier.from_bundle(smile_bundle, provider="cpu")
    image = Image.new("RGB", (8, 8))
    for call, single in [
        (lambda: predict(smile_bundle, "/photo.jpg"), "a single str '/photo.jpg'"),
        (lambda: classifier.predict_files(tmp_path / "a.jpg"), "a single PosixPath"),
        (lambda: classifier.predict_images(image), "a single Image"),
    ]:
        with pytest.raises(TypeError, match=f"expected an iterable of .*, got {single}.*; wrap"):
            call()
    with pytest.raises(TypeError, match="expected an iterable of paths, got int"):
        classifier.predict_files(3)  # at the call, not at the first result


@pytest.mark.parametrize("pool", [{}, {"decode_threads": 2}, {"batch_processes": 2}])
def test_an_item_that_is_not_a_path_is_an_error_result_and_the_others_go_on(
    smile_bundle, tmp_path, pool
):
    from onnxedge.runtime import Classifier, predict

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(good)
    items = [str(good), None, 3, bytes(good)] * 3
    classifier = Classifier.from_bundle(smile_bundle, provider="cpu")
    results = list(classifier.predict_files(items, batch_size=2, **pool))
    assert [r.error is None for r in results] == [True, False, False, True] * 3
    assert results[1].file == "None" and results[1].error == "expected a file path, got NoneType"
    assert results[2].error == "expected a file path, got int"
    through = list(predict(smile_bundle, [bytes(good), None], provider="cpu"))
    assert through[0].file == str(good) and through[0].error is None  # bytes: a path, decoded
    assert through[1].error == "expected a file path, got NoneType"


def test_a_pil_image_that_cannot_be_used_is_an_image_read_error(smile_bundle, tmp_path):
    from onnxedge.runtime import Classifier
    from onnxedge.runtime.classifier.preprocess import ImageReadError

    classifier = Classifier.from_bundle(smile_bundle, provider="cpu")
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "n.jpg", quality=90)
    data = (tmp_path / "n.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    closed = Image.open(tmp_path / "n.jpg")
    closed.load()
    closed.close()
    for image, message in [
        (Image.new("RGB", (0, 0)), "expected an image with pixels, found 0x0"),
        (Image.open(tmp_path / "half.jpg"), "half.jpg: cannot use the image: image file is trunc"),
        (closed, "n.jpg: cannot use the image: Operation on closed image"),
    ]:
        with pytest.raises(ImageReadError, match=message):
            classifier.predict_images([image])
    (premultiplied,) = classifier.predict_images([Image.new("La", (8, 8))])  # PIL: La to LA only
    assert 0 <= premultiplied.probability <= 1


def test_arrays_far_outside_the_preprocessings_range_are_warned_about_once(smile_bundle, caplog):
    """float32 pixels 0..255 where the bundle scales by 1/255 ran and gave a confident answer."""
    from onnxedge.runtime import Classifier

    classifier = Classifier.from_bundle(smile_bundle, provider="cpu")
    fine = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    with caplog.at_level("WARNING"):
        classifier.predict_array(fine)
        assert not caplog.records
        classifier.predict_array(fine * 255)
        classifier.predict_array(fine * 255)
    (record,) = caplog.records
    assert "where the bundle's preprocessing makes pixels into [0, 1]" in record.getMessage()


def test_a_bundle_path_that_is_none_empty_or_a_file_is_one_line(smile_bundle, tmp_path):
    """ "" opened the current folder; None raised pathlib's TypeError; a file was "no directory"."""
    from onnxedge.runtime import Bundle, write_faces
    from onnxedge.runtime.errors import ArgumentError, BundleError

    for path, message in [
        ("", "expected a bundle directory's path, got ''"),
        (None, "expected a bundle directory's path, got None"),
        (smile_bundle / "model.onnx", "expected a bundle directory, found a file at"),
    ]:
        with pytest.raises(BundleError, match=re.escape(message)):
            Bundle.open(path)
    with pytest.raises(ArgumentError, match="expected workers of at least 1 or None, got 0"):
        write_faces(tmp_path / "faces", count=10, workers=0)


def test_columns_of_paths_are_several_paths(smile_bundle, tmp_path):
    """A pandas Series has ``mode`` and ``size`` (it was taken for one PIL image); a pyarrow
    array yields scalars (they were error results); numpy yields np.str_ (kept as str)."""
    import pandas as pd
    import pyarrow as pa

    from onnxedge.runtime import check_parity, predict

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(good)
    for column in (pd.Series([str(good)]), pa.array([str(good)]), np.array([str(good)])):
        (result,) = predict(smile_bundle, column, provider="cpu")
        assert result.error is None and type(result.file) is str and result.file == str(good)
    assert check_parity(smile_bundle, providers=["cpu"], batch_sizes=None)  # the reference's
