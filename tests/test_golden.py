"""Golden data with real images (`onnxedge export --images DIR`): found as `predict` walks a
directory, read as `predict` reads them and no more than fit, a bad file skipped with a warning
that gives its reason once, and parity passes on the result. And the module behind the golden
data: rebuilt from the manifest by the one function the bench's peers use too."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxedge.export.golden import make_golden, read_images
from onnxedge.models.registry import SQUARE_CROP_64
from onnxedge.models.weights import CannotRebuild, module_from_manifest
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.preprocess import load_image
from onnxedge.runtime.cli import main
from onnxedge.runtime.engines.onnxruntime.session import short_reason
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity import load_golden

BROKEN = "c_broken.png: expected an image file, found no format PIL reads"


def image_dir(tmp_path: Path) -> Path:
    """a_face.png, b_wide.jpg, a broken c_broken.png, files that are not named like images,
    a hidden file and a subdirectory with one more image (and a hidden one with another)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)

    def image(path: Path, size: tuple[int, int]) -> None:
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)

    image(folder / "a_face.png", (178, 218))
    image(folder / "b_wide.jpg", (120, 80))
    (folder / "c_broken.png").write_text("not an image")
    (folder / "c_notes.txt").write_text("not named like an image: never read")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    image(folder / "sub" / "d_nested.png", (64, 64))
    image(folder / ".hidden" / "e.png", (64, 64))
    return folder


def test_read_images_walks_like_predict_and_gives_each_reason_once(tmp_path, caplog):
    folder = image_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="onnxedge.export.golden"):
        images, skipped = read_images(folder, SQUARE_CROP_64)
    # a directory's files first, then its subdirectories; hidden entries and other names left out
    assert [name for name, _ in images] == ["a_face.png", "b_wide.jpg", "sub/d_nested.png"]
    np.testing.assert_array_equal(images[0][1], load_image(folder / "a_face.png", SQUARE_CROP_64))
    np.testing.assert_array_equal(
        images[2][1], load_image(folder / "sub" / "d_nested.png", SQUARE_CROP_64)
    )
    assert skipped == [BROKEN]  # the name once, then the reason
    assert any("c_broken.png" in r.getMessage() for r in caplog.records)


def test_read_images_stops_once_enough_were_read(tmp_path, caplog):
    folder = image_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="onnxedge.export.golden"):
        images, skipped = read_images(folder, SQUARE_CROP_64, limit=2)
    assert [name for name, _ in images] == ["a_face.png", "b_wide.jpg"]
    assert skipped == []  # c_broken.png, next in line, was never opened
    assert any("leaving 2 more unread" in r.getMessage() for r in caplog.records)


def test_make_golden_reads_only_the_images_that_fit(tmp_path, smile_bundle):
    from onnxedge.models import get_model_spec
    from onnxedge.models.weights import seeded

    folder = image_dir(tmp_path)
    module, _ = seeded(get_model_spec("smile_cnn").build, 0)
    model = onnx.load(str(smile_bundle / "model.onnx"))
    # batch 8: five structured rows, room for two images, one random row
    golden = make_golden(module, model, SQUARE_CROP_64, images_dir=folder, batch_sizes=(1, 8))
    assert golden.block["images"] == ["a_face.png", "b_wide.jpg"]
    assert golden.block["images_skipped"] == []
    with pytest.raises(OnnxEdgeError, match="has no room for images"):
        make_golden(module, model, SQUARE_CROP_64, images_dir=folder, batch_sizes=(1, 6))


def test_a_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.jpg").write_text("x")
    with pytest.raises(OnnxEdgeError, match=r"found none readable \(1 skipped\)"):
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
    assert block["images"] == ["a_face.png", "b_wide.jpg", "sub/d_nested.png"]
    assert block["images_skipped"] == [BROKEN]
    ref = load_golden(Bundle.open(out))
    b64 = ref.batch(64)
    assert b64.kinds[5:8] == ("image:a_face.png", "image:b_wide.jpg", "image:sub/d_nested.png")
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


# --- the module behind the golden data ------------------------------------------------------------


def _manifest(smile_bundle: Path, **changes) -> dict:
    manifest = json.loads((smile_bundle / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            del manifest[key]
        else:
            manifest[key] = value
    return manifest


def test_module_from_manifest_rebuilds_the_exported_module(smile_bundle):
    import torch

    from onnxedge.models import get_model_spec
    from onnxedge.models.weights import seeded

    module = module_from_manifest(_manifest(smile_bundle))
    expected, _ = seeded(get_model_spec("smile_cnn").build, 0)
    assert not module.training
    for (name, a), (_, b) in zip(
        module.state_dict().items(), expected.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        (None, "no 'weights' block"),
        ({"source": "onnx"}, "found 'onnx'"),
        ({"source": "seed"}, "records no integer seed"),
        ({"source": "checkpoint", "path": "w.safetensors"}, "record no sha256"),
        (
            {"source": "checkpoint", "path": "runs/smile_12.safetensors", "sha256": "ab" * 32},
            "--checkpoint PATH",
        ),
    ],
    ids=["no-block", "unknown-source", "no-seed", "no-sha256", "no-checkpoint"],
)
def test_module_from_manifest_refuses_what_it_cannot_rebuild(smile_bundle, weights, fragment):
    """Golden's live reference used seed 0 for a manifest without weights; now no caller does."""
    from onnxedge.models.peers import PeerUnavailable, build_model

    manifest = _manifest(smile_bundle, weights=weights)
    with pytest.raises(CannotRebuild, match=fragment) as refused:
        module_from_manifest(manifest)
    with pytest.raises(PeerUnavailable) as peer:  # the bench's peers: skipped, same reason
        build_model(manifest, None)
    assert str(peer.value) == str(refused.value)
    # bench's "Not measured" line shortens it and still says what to do
    assert fragment in short_reason(str(peer.value))
    with pytest.raises(CannotRebuild, match="not in onnxedge's registry"):
        module_from_manifest(_manifest(smile_bundle, model="resnet_from_elsewhere"))


def test_a_manifest_without_weights_is_a_clear_error_for_the_live_reference(bundle_copy):
    from cli_assertions import assert_one_line_error

    (bundle_copy / "manifest.json").write_text(json.dumps(_manifest(bundle_copy, weights=None)))
    result = CliRunner().invoke(
        main, ["parity", str(bundle_copy), "--reference", "live", "--providers", "cpu"]
    )
    assert_one_line_error(result, "no 'weights' block")


def test_a_checkpoint_is_verified_before_it_is_read(smile_bundle, tmp_path):
    """A file with the wrong sha256 is refused as not the bundle's checkpoint, unread (so a
    garbage file is not handed to torch.load)."""
    garbage = tmp_path / "w.pt"
    garbage.write_bytes(b"not a checkpoint")
    checkpoint = {"source": "checkpoint", "path": "w.pt", "sha256": "ab" * 32}
    with pytest.raises(OnnxEdgeError, match="is not the one this bundle was exported from"):
        module_from_manifest(_manifest(smile_bundle, weights=checkpoint), garbage)
    with pytest.raises(OnnxEdgeError, match="found nothing at"):
        module_from_manifest(_manifest(smile_bundle, weights=checkpoint), tmp_path / "none.pt")
    with pytest.raises(OnnxEdgeError, match="leave out --checkpoint"):
        module_from_manifest(_manifest(smile_bundle), garbage)
