"""`evaluate_bundle`: metrics in numpy, the device's classifier on a split, bad files counted."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest

from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.data import open_dataset
from onnxedge.runtime.data.celeba import IMAGES
from onnxedge.runtime.data.evaluate import binary_metrics, evaluate_bundle, roc_auc
from onnxedge.runtime.data.synth import write_faces


def _pairwise_auc(labels, scores) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_is_the_pairwise_probability_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.random(40) + 0.3 * labels, 1)  # rounded: many ties
    assert roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)


def test_roc_auc_extremes_and_one_class():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc([1, 1], [0.2, 0.3]) is None


def test_binary_metrics_counts():
    accuracy, precision, recall, confusion = binary_metrics(
        [1, 1, 1, 0, 0, 0, 0], [True, True, False, True, False, False, False]
    )
    assert confusion == ((3, 1), (1, 2))
    assert accuracy == pytest.approx(5 / 7) and precision == pytest.approx(2 / 3)
    assert recall == pytest.approx(2 / 3)
    assert binary_metrics([0, 0], [False, False])[1:3] == (None, None)


@pytest.fixture(scope="module")
def faces_with_a_bad_file(tmp_path_factory):
    root = write_faces(tmp_path_factory.mktemp("eval") / "faces", count=40, seed=5, workers=1).out
    (root / IMAGES / "000038.jpg").write_bytes(b"not a jpeg")  # in the test split (37-40)
    return root


def test_evaluate_reports_metrics_and_counts_a_bad_file(smile_bundle, faces_with_a_bad_file):
    data = open_dataset(faces_with_a_bad_file)
    result = evaluate_bundle(smile_bundle, data, split="test", provider="cpu")
    test = data.split("test")
    assert sum(result.images.values()) == len(test) == 4
    assert result.evaluated == 3 and not result
    (failed,) = result.failed
    assert failed.file.endswith("000038.jpg") and "no format PIL reads" in failed.reason
    (tn, fp), (fn, tp) = result.confusion
    assert tn + fp + fn + tp == 3
    # The same numbers as the device's classifier gives file by file.
    clf = Classifier.from_bundle(smile_bundle, provider="cpu")
    good = [(p, y) for p, y in zip(test.paths, test.labels, strict=True) if p.name != "000038.jpg"]
    probs = [clf.predict_images([p])[0].probability for p, _ in good]
    labels = [y for _, y in good]
    expected = binary_metrics(labels, np.asarray(probs) >= clf.threshold)[0]
    assert result.accuracy == pytest.approx(expected)
    assert result.roc_auc == roc_auc(labels, probs)
    as_dict = result.to_dict()
    assert as_dict["accuracy"] == result.accuracy and as_dict["failed"][0]["reason"]
    assert as_dict["confusion"]["matrix"] == [[tn, fp], [fn, tp]]
    assert result.labels_match  # the registry's labels are CelebA's Smiling classes


def test_evaluate_takes_a_folder_and_a_split(smile_bundle, faces_with_a_bad_file, tmp_path):
    root = shutil.copytree(faces_with_a_bad_file, tmp_path / "faces")
    result = evaluate_bundle(smile_bundle, root, split="val", provider="cpu")
    assert result.split == "val" and result.evaluated == 4 and result
    assert result.data["layout"] == "celeba"


def test_files_in_class_folders_that_cannot_be_read_are_counted_not_skipped(smile_bundle, tmp_path):
    """A broken link and a FIFO named as images in a class folder are failed files of the split,
    each with its reason, and the good images are still classified."""
    import os

    from PIL import Image

    for label in ("not_smiling", "smiling"):
        folder = tmp_path / "test" / label
        folder.mkdir(parents=True)
        Image.new("RGB", (64, 64), (90, 120, 150)).save(folder / "good.png")
    (tmp_path / "test" / "smiling" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    os.mkfifo(tmp_path / "test" / "not_smiling" / "pipe.jpg")
    result = evaluate_bundle(smile_bundle, tmp_path, split="test", provider="cpu")
    assert result.evaluated == 2 and not result
    reasons = {os.path.basename(f.file): f.reason for f in result.failed}
    assert set(reasons) == {"gone.jpg", "pipe.jpg"}, reasons
    assert "symbolic link" in reasons["gone.jpg"] and "named pipe" in reasons["pipe.jpg"], reasons


def test_class_names_are_escaped_once_on_every_line_of_the_report(smile_bundle, tmp_path):
    """A class folder named with a newline split the report's first line in two, a byte outside
    UTF-8 went out raw, and the positive class and the labels note escaped it twice."""
    import os

    from click.testing import CliRunner
    from PIL import Image

    from onnxedge.runtime.cli import main

    names = [os.fsdecode(b"not_sm\xe9iling"), "smi\nling"]
    for i, label in enumerate(names):
        folder = tmp_path / "test" / label
        folder.mkdir(parents=True)
        Image.new("RGB", (64, 64), (90 + 60 * i, 120, 150)).save(folder / "a.png")
    args = ["evaluate", str(smile_bundle), "--data", str(tmp_path), "--providers", "cpu"]
    result = CliRunner().invoke(main, args)
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "split      test: 2 images (not_sm\\351iling 1, smi\\nling 1), 2 evaluated, 0 failed"
    ), lines[0]
    assert "(positive: 'smi\\nling')" in result.stdout
    note = next(line for line in lines if line.startswith("note:"))
    assert note.endswith("the data's classes 'not_sm\\351iling' / 'smi\\nling'"), note
    result.stdout.encode("utf-8")  # nothing outside UTF-8 went out


def evaluate_cli(bundle, data, *args):
    from click.testing import CliRunner

    from onnxedge.runtime.cli import main

    argv = ["evaluate", str(bundle), "--data", str(data), "--providers", "cpu", *map(str, args)]
    return CliRunner().invoke(main, argv)


@pytest.mark.parametrize(
    "pool",
    [
        ["--decode-threads", "1"],
        ["--decode-processes", "2"],
        ["--batch-processes", "2"],
    ],
)
def test_evaluate_takes_predicts_pools_and_reports_the_same(
    smile_bundle, faces_with_a_bad_file, pool, monkeypatch
):
    """The pool options are predict's (one vocabulary) and reach `predict_files`; whichever
    decodes, the report is the same, the bad file counted in it."""
    default = evaluate_cli(smile_bundle, faces_with_a_bad_file, "--batch-size", 2)
    asked = []
    predict_files = Classifier.predict_files

    def watched(self, paths, **kwargs):
        asked.append(kwargs)
        return predict_files(self, paths, **kwargs)

    monkeypatch.setattr(Classifier, "predict_files", watched)
    pooled = evaluate_cli(smile_bundle, faces_with_a_bad_file, "--batch-size", 2, *pool)
    (kwargs,) = asked
    assert kwargs[pool[0].removeprefix("--").replace("-", "_")] == int(pool[1]), kwargs
    assert default.exit_code == pooled.exit_code == 0, pooled.output

    def figures(output: str) -> list[str]:  # the provider line names what ran the batches
        return [line for line in output.splitlines() if not line.startswith("threshold")]

    assert figures(pooled.stdout) == figures(default.stdout)
    assert "3 evaluated, 1 failed" in pooled.stdout


def test_evaluate_max_pixels_refuses_larger_images(smile_bundle, faces_with_a_bad_file):
    """--max-pixels below the faces' size: every file is a failed one saying why, and nothing
    could be evaluated (exit 1); the library takes it as ``max_pixels``."""
    result = evaluate_cli(smile_bundle, faces_with_a_bad_file, "--max-pixels", 1000)
    assert result.exit_code == 1, result.output
    assert "0 evaluated, 4 failed" in result.stdout
    assert result.stdout.count("more than the limit of 1,000") == 3, result.stdout
    library = evaluate_bundle(smile_bundle, faces_with_a_bad_file, provider="cpu", max_pixels=1000)
    assert library.evaluated == 0 and len(library.failed) == 4


@pytest.mark.parametrize("threshold", ["0.5", True, 1.5, float("nan")])
def test_evaluate_refuses_a_threshold_predict_refuses(tmp_path, threshold):
    """As `predict` does, before the bundle is read: "0.5" was a ValueError from float() and True
    was taken as 1.0."""
    from onnxedge.runtime import ArgumentError

    with pytest.raises(
        ArgumentError, match=f"expected a threshold in \\[0, 1\\], got {threshold!r}"
    ):
        evaluate_bundle(tmp_path / "no bundle", tmp_path / "no data", threshold=threshold)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize(
    "args,message",
    [
        (["--decode-threads", "2", "--batch-processes", "2"], "give one of them"),
        (["--decode-processes", "2", "--decode-threads", "2"], "give one of them"),
        (["--batch-processes", "2", "--threads", "1"], "--batch-processes sets each process"),
        (["--decode-processes", "0"], "--decode-processes"),
        (["--max-pixels", "0"], "--max-pixels"),
        (["--decode-threads", "2", "--ray", "auto"], "--decode-threads applies without --ray"),
    ],
)
def test_pool_usage_errors(smile_bundle, faces_with_a_bad_file, command, args, message):
    """The same options, the same usage errors (exit 2), in predict and evaluate."""
    from click.testing import CliRunner

    from onnxedge.runtime.cli import main

    if command == "predict":
        argv = ["predict", str(smile_bundle), str(faces_with_a_bad_file), *args]
        result = CliRunner().invoke(main, argv)
    else:
        result = evaluate_cli(smile_bundle, faces_with_a_bad_file, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
