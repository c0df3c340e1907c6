"""Golden data with real images (`onnxedge export --images DIR`): read as `predict` reads them, a
bad file skipped with a warning, and parity passes on the result."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxedge.export.golden import read_images
from onnxedge.models.registry import SQUARE_CROP_64
from onnxedge.runtime.bundle import Bundle
from onnxedge.runtime.cli import main
from onnxedge.runtime.parity import load_golden
from onnxedge.runtime.preprocess import load_image


def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, size in (("a_face.png", (178, 218)), ("b_wide.jpg", (120, 80))):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    (folder / "c_notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "sub").mkdir()
    return folder


def test_read_images_skips_a_bad_file_with_a_warning(tmp_path, caplog):
    folder = image_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="onnxedge.export.golden"):
        images, skipped = read_images(folder, SQUARE_CROP_64)
    assert [name for name, _ in images] == ["a_face.png", "b_wide.jpg"]
    np.testing.assert_array_equal(images[0][1], load_image(folder / "a_face.png", SQUARE_CROP_64))
    assert len(skipped) == 1 and skipped[0].startswith("c_notes.txt: ")
    assert any("c_notes.txt" in r.getMessage() for r in caplog.records)


def test_a_folder_without_images_is_an_error(tmp_path):
    from onnxedge.runtime.errors import OnnxEdgeError

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OnnxEdgeError, match="found none readable"):
        read_images(tmp_path, SQUARE_CROP_64)
    with pytest.raises(OnnxEdgeError, match="found no directory"):
        read_images(tmp_path / "missing", SQUARE_CROP_64)


@pytest.mark.slow
def test_export_with_images_then_parity(tmp_path):
    folder = image_dir(tmp_path)
    out = tmp_path / "bundle"
    runner = CliRunner()
    result = runner.invoke(main, ["export", "--out", str(out), "--images", str(folder)])
    assert result.exit_code == 0, result.output
    block = json.loads((out / "manifest.json").read_text())["golden"]
    assert block["images"] == ["a_face.png", "b_wide.jpg"]
    assert [s.split(":")[0] for s in block["images_skipped"]] == ["c_notes.txt"]
    ref = load_golden(Bundle.open(out))
    b64 = ref.batch(64)
    assert b64.kinds[5:7] == ("image:a_face.png", "image:b_wide.jpg")
    np.testing.assert_array_equal(b64.inputs[6], load_image(folder / "b_wide.jpg", SQUARE_CROP_64))
    result = runner.invoke(main, ["parity", str(out), "--providers", "cpu"])
    assert result.exit_code == 0, result.output


def test_images_must_be_a_directory(tmp_path):
    result = CliRunner().invoke(
        main, ["export", "--out", str(tmp_path / "b"), "--images", str(tmp_path / "nope")]
    )
    assert result.exit_code == 1, result.output
    assert "expected a directory of images" in result.output
    assert not (tmp_path / "b").exists()
