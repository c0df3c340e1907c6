"""A report (``--json FILE``, tune's ``--out``, bench's ``--markdown`` and ``--plot``) written
over a file the command reads is refused before any work, exit 2, the file left as it was: it
replaced a bundle's manifest.json or model.onnx, or a data set's list, with the report about
it, and the next command found the bundle broken."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxedge.runtime.cli import main


@pytest.fixture(scope="module")
def inputs(smile_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    shutil.copytree(smile_bundle, root / "B")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "x.png")
    for tuning in (root / "t.json", root / "B.tuning.json"):  # what --tuned reads (any bytes)
        tuning.write_text('{"format": "onnxedge-tuning"}\n')
    return root


CASES = [
    ("check", "{B}", "--json", "{B}/model.onnx"),
    ("inspect", "{B}", "--json", "{B}/manifest.json"),
    ("parity", "{B}", "--providers", "cpu", "--json", "{B}/golden.npz"),
    ("predict", "{B}", "{root}/x.png", "--json", "{B}/manifest.json"),
    ("predict", "{B}", "{root}/x.png", "--json", "{root}/x.png.json", "--json", "{root}/x.png"),
    ("tune", "{B}", "--seconds", "0.05", "--batch-sizes", "1", "--out", "{B}/manifest.json"),
    ("bench", "{B}", "--peers", "none", "--iters", "1", "--markdown", "{B}/golden.npz"),
    ("check", "{B}/model.onnx", "--json", "{B}/model.onnx"),
    ("predict", "{B}", "{root}/x.png", "--tuned={root}/t.json", "--json", "{root}/t.json"),
    ("predict", "{B}", "{root}/x.png", "--tuned", "--json", "{B}.tuning.json"),
]


@pytest.mark.parametrize("args", CASES, ids=[f"{c[0]}-{c[-2]}" for c in CASES])
def test_a_report_over_an_input_is_refused_and_the_input_kept(inputs, args):
    argv = [a.format(B=inputs / "B", root=inputs) for a in args]
    target = argv[-1]
    before = Path(target).read_bytes()
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert f"{argv[-2]} {target}: expected a file outside what this command reads, found " in (
        result.output.replace("\n", " ")
    )
    assert Path(target).read_bytes() == before
    check = CliRunner().invoke(main, ["check", str(inputs / "B")])
    assert check.exit_code == 0, check.output


def test_a_report_inside_the_bundle_folder_is_written_and_written_again(inputs, tmp_path):
    report = inputs / "B" / "check.json"
    for _ in range(2):  # the second time over the first run's report, which nothing reads
        result = CliRunner().invoke(main, ["check", str(inputs / "B"), "--json", str(report)])
        assert result.exit_code == 0, result.output
        assert report.is_file()
    report.unlink()


def test_a_report_in_the_folder_predict_reads_is_written_again_but_not_over_an_image(inputs):
    photos = inputs / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photos / "a.png")
    report = photos / "preds.json"
    try:
        for _ in range(2):
            argv = ["predict", str(inputs / "B"), str(photos), "--json", str(report)]
            result = CliRunner().invoke(main, argv)
            assert result.exit_code == 0, result.output
        over = CliRunner().invoke(
            main, ["predict", str(inputs / "B"), str(photos), "--json", str(photos / "a.png")]
        )
        assert over.exit_code == 2 and "a file inside" in over.output
        # nor a new file named as an image, which the next run's walk would take for one
        made = CliRunner().invoke(
            main, ["predict", str(inputs / "B"), str(photos), "--json", str(photos / "p.jpg")]
        )
        assert made.exit_code == 2 and "a file inside" in made.output
        assert not (photos / "p.jpg").exists()
    finally:
        shutil.rmtree(photos)


def test_a_data_sets_list_is_not_replaced_by_data_info(tmp_path):
    data = tmp_path / "ds"
    made = CliRunner().invoke(main, ["data", "synth", "--out", str(data), "--count", "10"])
    assert made.exit_code == 0, made.output
    listing = next(data.rglob("list_attr_celeba.txt"))
    before = listing.read_bytes()
    result = CliRunner().invoke(main, ["data", "info", str(data), "--json", str(listing)])
    assert result.exit_code == 2, result.output
    assert listing.read_bytes() == before


def test_a_plot_inside_the_bundle_is_written_and_written_again(inputs):
    plot = inputs / "B" / "layers.png"  # named as an image, but no walk looks in a bundle
    pytest.importorskip("matplotlib")
    try:
        for _ in range(2):
            argv = ["parity", str(inputs / "B"), "--providers", "cpu", "--localize", "always"]
            argv += ["--batch-sizes", "1", "--plot", str(plot)]
            result = CliRunner().invoke(main, argv)
            assert result.exit_code == 0, result.output
            assert plot.is_file()
    finally:
        plot.unlink(missing_ok=True)


@pytest.mark.parametrize("command", ["info", "evaluate"])
def test_a_report_named_as_an_image_inside_a_data_set_is_refused(smile_bundle, tmp_path, command):
    data = tmp_path / "ds"
    made = CliRunner().invoke(main, ["data", "synth", "--out", str(data), "--count", "10"])
    assert made.exit_code == 0, made.output
    images = next(data.rglob("*.jpg")).parent
    new = images / "report.jpg"
    argv = (
        ["data", "info", data] if command == "info" else ["evaluate", smile_bundle, "--data", data]
    )
    result = CliRunner().invoke(main, [*map(str, argv), "--json", str(new)])
    assert result.exit_code == 2 and "a file inside" in result.output, result.output
    assert not new.exists()
