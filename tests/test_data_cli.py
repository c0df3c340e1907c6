"""`onnxedge data synth|info` and `onnxedge evaluate` as a user runs them; bad data folders give one
line and exit 1 in every command that reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_assertions import assert_one_line_error
from click.testing import CliRunner
from PIL import Image
from torchless import run_without_torch

from onnxedge.runtime.cli import main
from onnxedge.runtime.data.celeba import ATTRIBUTES, IMAGES, PARTITION


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "faces"
    result = invoke("data", "synth", "--out", out, "--count", "20", "--seed", "2", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert (
        "wrote 20 synthetic faces" in result.output and "train 16, val 2, test 2" in result.output
    )
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_synth_twice_same_seed_identical_other_seed_different(faces, tmp_path):
    same = invoke("data", "synth", "--out", tmp_path / "a", "--count", "20", "--seed", "2")
    other = invoke("data", "synth", "--out", tmp_path / "b", "--count", "20", "--seed", "3")
    assert same.exit_code == other.exit_code == 0, same.output + other.output
    assert _tree(tmp_path / "a") == _tree(faces)
    assert _tree(tmp_path / "b") != _tree(faces)


def test_synth_options_set_the_drawing_and_are_recorded(faces, tmp_path):
    out = tmp_path / "all_near"
    args = ["--count", "20", "--seed", "2", "--workers", "1", "--near-fraction", "1"]
    args += ["--near-limit", "0.2", "--expression", "0", "--supersample", "1", "--sag", "0.5"]
    result = invoke("data", "synth", "--out", out, *args)
    assert result.exit_code == 0, result.output
    assert "20 near the decision line" in result.output
    marker = json.loads((out / "synth.json").read_text())
    assert marker["near_decision_line"] == 20
    style = marker["style"]
    assert (style["near_fraction"], style["near_limit"], style["expression"]) == (1, 0.2, 0)
    assert (style["supersample"], style["sag"]) == (1, 0.5)
    assert _tree(out / "img_align_celeba") != _tree(faces / "img_align_celeba")
    default = json.loads((faces / "synth.json").read_text())["style"]
    assert (default["near_fraction"], default["expression"], default["supersample"]) == (0.15, 1, 2)


def test_synth_refuses_options_that_cannot_be_drawn(tmp_path):
    out = tmp_path / "x"
    below = invoke("data", "synth", "--out", out, "--count", "10", "--near-limit", "0.04")
    assert_one_line_error(below, "--near-limit: expected above --min-curvature (0.05)", "0.04")
    assert not out.exists()
    usage = invoke("data", "synth", "--out", out, "--count", "10", "--supersample", "0")
    assert usage.exit_code == 2 and "--supersample" in usage.output


def test_data_info(faces):
    result = invoke("data", "info", faces)
    assert result.exit_code == 0, result.output
    assert f"{faces}: celeba, attribute Smiling" in result.output
    assert "classes: 0 = 'not smiling' (negative), 1 = 'smiling' (positive)" in result.output
    described = json.loads(invoke("data", "info", faces, "--json").output)
    assert sum(described["images"]["train"].values()) == 16


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def _celeba(root: Path, values=(1, -1, 1, -1), partition=(0, 0, 1, 2)) -> Path:
    files = [f"{i:06d}.jpg" for i in range(1, len(values) + 1)]
    for f in files:
        _image(root / IMAGES / f)
    rows = [f"{f} {v:2d} -1" for f, v in zip(files, values, strict=True)]
    (root / ATTRIBUTES).write_text("\n".join([str(len(files)), "Smiling Young", *rows]) + "\n")
    (root / PARTITION).write_text(
        "".join(f"{f} {p}\n" for f, p in zip(files, partition, strict=True))
    )
    return root


def _malformed_attributes(root: Path) -> Path:
    _celeba(root)
    text = (root / ATTRIBUTES).read_text().replace("000003.jpg  1 -1", "000003.jpg  1")
    (root / ATTRIBUTES).write_text(text)
    return root


def _partition_names_missing(root: Path) -> Path:
    _celeba(root)
    (root / IMAGES / "000004.jpg").unlink()
    return root


def _empty_class(root: Path) -> Path:
    _image(root / "smiling" / "a.jpg")
    (root / "not_smiling").mkdir()
    return root


def _single_class(root: Path) -> Path:
    _image(root / "smiling" / "a.jpg")
    return root


CASES = {
    "malformed attribute file": (_malformed_attributes, (), ["line 5", "2 values", "2 field"]),
    "partition names missing images": (_partition_names_missing, (), ["000004.jpg", "not found"]),
    "unknown attribute": (_celeba, ("--attribute", "Smilling"), ["unknown attribute 'Smilling'"]),
    "empty class folder": (_empty_class, (), ["not_smiling", "holds no image"]),
    "single class": (_single_class, (), ["single class 'smiling'"]),
    "single-valued attribute": (_celeba, ("--attribute", "Young"), ["'Young' is -1 for every"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_data_is_one_line_and_exit_1_in_data_info(tmp_path, case):
    make, extra, fragments = CASES[case]
    assert_one_line_error(invoke("data", "info", make(tmp_path / "d"), *extra), *fragments)


@pytest.mark.parametrize("case", ["malformed attribute file", "empty class folder"])
def test_bad_data_is_one_line_and_exit_1_in_train_and_evaluate(tmp_path, smile_bundle, case):
    make, extra, fragments = CASES[case]
    data = make(tmp_path / "d")
    out = tmp_path / "m.safetensors"
    assert_one_line_error(invoke("train", "--data", data, "--out", out, *extra), *fragments)
    assert not out.exists()
    assert_one_line_error(invoke("evaluate", smile_bundle, "--data", data, *extra), *fragments)


def test_evaluate_text_json_and_a_bad_image(faces, smile_bundle, tmp_path):
    import shutil

    root = Path(shutil.copytree(faces, tmp_path / "faces"))
    (root / IMAGES / "000020.jpg").write_bytes(b"")  # in the test split (19-20)
    report = tmp_path / "eval.json"
    result = invoke(
        "evaluate", smile_bundle, "--data", root, "--json", report, "--providers", "cpu"
    )
    assert result.exit_code == 0, result.output
    assert "split      test: 2 images" in result.output and "1 evaluated, 1 failed" in result.output
    assert "accuracy   " in result.output and "confusion:" in result.output
    assert f"{root / IMAGES / '000020.jpg'}\tERROR\t" in result.output
    written = json.loads(report.read_text())
    assert written["accuracy"] in (0.0, 1.0) and written["evaluated"] == 1
    assert written["failed"][0]["file"].endswith("000020.jpg")


def test_evaluate_min_accuracy_gate(faces, smile_bundle):
    from onnxedge.runtime.data import open_dataset

    # Threshold 0: every face is called smiling, so the accuracy is the share of smiling faces.
    labels = open_dataset(faces).split("train").labels
    share = sum(labels) / len(labels)
    assert 0 < share < 1
    common = ("evaluate", smile_bundle, "--data", faces, "--split", "train", "--threshold", "0")
    passed = invoke(*common, "--min-accuracy", str(100 * share))  # a percent
    assert passed.exit_code == 0 and "PASSED | accuracy" in passed.output, passed.output
    failed = invoke(*common, "--min-accuracy", str(100 * share + 1))
    assert failed.exit_code == 1 and "FAILED | accuracy" in failed.output, failed.output


def test_synth_and_evaluate_run_without_torch(smile_bundle, tmp_path):
    out = tmp_path / "faces"
    synth = run_without_torch(["data", "synth", "--out", out, "--count", "10", "--workers", "1"])
    assert synth.returncode == 0, synth.stderr
    result = run_without_torch(["evaluate", smile_bundle, "--data", out, "--providers", "cpu"])
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
