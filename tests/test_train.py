"""`onnxedge.models.train` on a tiny generated set: it learns, it is deterministic, its pixels are
the device's, and its checkpoint carries what export needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from onnxedge.models import get_model_spec
from onnxedge.models.train import TrainConfig, train
from onnxedge.models.train_data import SplitDataset, square_box, training_image
from onnxedge.models.weights import read_checkpoint_info, read_state_dict
from onnxedge.runtime.classifier.preprocess import load_image
from onnxedge.runtime.cli import main
from onnxedge.runtime.data import open_dataset
from onnxedge.runtime.data.celeba import IMAGES
from onnxedge.runtime.data.synth import write_faces

SPEC = get_model_spec("smile_cnn").preprocessing


@pytest.fixture(scope="module")
def tiny_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic faces: 32 train, 4 val, 4 test."""
    return write_faces(tmp_path_factory.mktemp("train") / "faces", count=40, seed=11, workers=1).out


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    settings = {"epochs": 2, "batch_size": 8, "workers": 0, "schedule": "constant"}
    return TrainConfig(data=data, out=out, **{**settings, **kw})


def _loss(state: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> float:
    model = get_model_spec("smile_cnn").build()
    model.load_state_dict(state)
    with torch.no_grad():
        return float(torch.nn.functional.binary_cross_entropy(model.eval()(images), labels))


@pytest.fixture(scope="module")
def trained(tiny_faces, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "smile.safetensors"
    return train(_config(tiny_faces, out, head="mean")), out


def test_a_few_steps_change_the_weights_and_lower_the_loss(tiny_faces, trained):
    result, out = trained
    split = open_dataset(tiny_faces).split("train")
    items = [SplitDataset(split, SPEC, augment=False)[i] for i in range(len(split))]
    images = torch.stack([item[0] for item in items])
    labels = torch.stack([item[1] for item in items])
    torch.manual_seed(0)  # the initial weights of the run: seed 0, He initialisation
    from onnxedge.models.train import init_weights

    initial = get_model_spec("smile_cnn").build("mean")
    init_weights(initial, "kaiming")
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    after, _ = read_state_dict(out)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert set(changed) == set(before)  # every layer moved
    assert _loss(after, images, labels) < _loss(before, images, labels)
    assert [e.epoch for e in result.history] == [1, 2] and result.history[-1].steps == 8
    assert all(e.seconds > 0 and 0 <= e.val_accuracy <= 1 for e in result.history)


def test_checkpoint_metadata_says_what_export_needs(tiny_faces, trained):
    result, out = trained
    info = read_checkpoint_info(out)
    data = open_dataset(tiny_faces)
    assert info.model == "smile_cnn" and info.head == "mean" and info.attribute == "Smiling"
    assert info.class_names == ("not smiling", "smiling")
    assert info.labels == {"threshold": 0.5, "positive": "smiling", "negative": "not smiling"}
    assert info.preprocessing == SPEC
    assert info.epochs == 2 and info.best_epoch == result.best_epoch
    assert info.best_val_accuracy == result.best_val_accuracy
    assert info.data["listing_sha256"] == data.listing_sha256()
    assert len(info.training["history"]) == 2


def test_same_seed_same_metrics_whatever_the_workers(tiny_faces, trained, tmp_path):
    first, _ = trained
    again = train(_config(tiny_faces, tmp_path / "again.safetensors", head="mean", workers=1))
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "steps")
    assert [[getattr(e, k) for k in keys] for e in again.history] == [
        [getattr(e, k) for k in keys] for e in first.history
    ]
    other = train(_config(tiny_faces, tmp_path / "o.safetensors", head="mean", seed=1, max_steps=2))
    assert other.history[0].train_loss != first.history[0].train_loss


def test_evaluation_pixels_are_the_devices_and_training_crops_are_squares(tiny_faces):
    split = open_dataset(tiny_faces).split("val")
    for i, path in enumerate(split.paths):
        device = load_image(path, SPEC)
        image, label, index, ok = SplitDataset(split, SPEC, augment=False)[i]
        assert ok and index == i and float(label) == split.labels[i]
        assert np.array_equal(image.numpy(), device)  # the same code, so the same bits

    class Centre:  # a random crop that lands where the device crops, and no flip
        def integers(self, low, high):
            return (low + high - 1) // 2

        def random(self):
            return 0.9

    device = load_image(split.paths[0], SPEC)
    assert np.abs(training_image(split.paths[0], SPEC, Centre()) - device).max() <= 1 / 255
    rng = np.random.default_rng(0)
    boxes = {square_box((178, 218), rng) for _ in range(200)}
    assert all(right - left == bottom - top == 178 for left, top, right, bottom in boxes)
    assert {top for _, top, _, _ in boxes} == set(range(41))  # every vertical offset, as the book
    assert square_box((178, 218), None) == (0, 20, 178, 198)  # CelebA's centre 178x178


def test_augmented_items_flip_and_crop(tiny_faces):
    split = open_dataset(tiny_faces).split("train")
    data = SplitDataset(split, SPEC, augment=True, seed=0)
    views = [data[(0, epoch)][0].numpy() for epoch in range(8)]
    assert len({v.tobytes() for v in views}) > 1  # each epoch draws another crop or flip
    assert np.array_equal(data[(0, 3)][0].numpy(), views[3])  # and the same one again


def test_an_unreadable_training_image_is_skipped_and_named(tiny_faces, tmp_path):
    import shutil

    root = Path(shutil.copytree(tiny_faces, tmp_path / "faces"))
    (root / IMAGES / "000002.jpg").write_bytes(b"broken")
    result = train(_config(root, tmp_path / "c.safetensors", epochs=1))  # every image once
    assert result.failed_files == (str(root / IMAGES / "000002.jpg"),)
    assert result.history[0].steps == 4  # 31 readable images in batches of 8


def test_train_command(tiny_faces, tmp_path):
    out, report = tmp_path / "m.safetensors", tmp_path / "train.json"
    result = CliRunner().invoke(
        main,
        ["train", "--data", str(tiny_faces), "--out", str(out), "--epochs", "2", "--max-steps", "3",
         "--batch-size", "16", "--workers", "0", "--json", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("epoch 1/2  train loss") and "val loss" in lines[0]
    assert f"wrote {out}" in result.output
    history = json.loads(report.read_text())["history"]
    assert len(history) == 2 and read_checkpoint_info(out).epochs == 2
    assert "reached --max-steps 3" in result.output


def test_checkpoint_exports_with_its_head_labels_and_preprocessing(trained, tmp_path):
    _, ckpt = trained
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["head"] == "mean"  # from the checkpoint: no --head given
    assert manifest["labels"]["positive"] == "smiling"
    assert manifest["labels"]["negative"] == "not smiling"
    assert manifest["preprocessing"] == SPEC
    info = read_checkpoint_info(ckpt)
    assert manifest["training"]["data"]["listing_sha256"] == info.data["listing_sha256"]
    assert manifest["training"]["best_val_accuracy"] == info.best_val_accuracy
    assert manifest["weights"]["source"] == "checkpoint"


class _CentreRng:
    """A random crop that lands where the device crops, and no flip."""

    def integers(self, low, high):
        return (low + high - 1) // 2

    def random(self):
        return 0.9


def test_the_device_crops_a_celeba_photo_as_training_did(tiny_faces, trained, tmp_path):
    """The manifest's crop, applied by Classifier and predict: the pixels of a 178x218 CelebA image
    on the device are the training transform's (centred crop, no flip) within 1/255, and so are the
    probabilities; without the crop they are not."""
    from onnxedge.runtime.classifier.classifier import Classifier

    _, ckpt = trained
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    paths = open_dataset(tiny_faces).split("test").paths
    classifier = Classifier.from_bundle(out, provider="cpu")
    assert classifier.preprocessing["crop"] == "center-square"
    device = np.stack([classifier.preprocess(path) for path in paths])
    trained_pixels = np.stack([training_image(p, SPEC, _CentreRng()) for p in paths])
    assert np.abs(device - trained_pixels).max() <= 1 / 255
    uncropped = np.stack([load_image(p, {**SPEC, "crop": "none"}) for p in paths])
    assert np.abs(device - uncropped).max() > 0.1  # the crop matters: the check can fail
    from_files = [p.probability for p in classifier.predict_images(paths)]
    assert np.allclose(from_files, classifier.probabilities(trained_pixels), atol=1e-3)


def test_early_stopping_does_not_take_the_plateau_for_convergence(
    tiny_faces, tmp_path, monkeypatch
):
    """A model that cannot move (lr 1e-12) never improves on its first epoch: on the plateau that
    is not convergence, so every epoch runs; once the plateau counts as left, patience stops it."""
    frozen = {"epochs": 3, "patience": 1, "lr": 1e-12, "norm": "none", "init": "pytorch"}
    result = train(_config(tiny_faces, tmp_path / "a.safetensors", **frozen))
    assert result.stopped == "ran all 3 epochs" and not result.left_plateau
    assert len(result.history) == 3 and result.best_epoch == 1
    monkeypatch.setattr("onnxedge.models.train.PLATEAU_EXIT_LOSS", 10.0)  # every loss "left"
    stopped = train(_config(tiny_faces, tmp_path / "b.safetensors", **frozen))
    assert stopped.stopped.startswith("early stop") and len(stopped.history) == 2


def test_a_learning_rate_that_diverges_is_one_line_not_a_traceback(tiny_faces, tmp_path):
    """--lr 1e30 made the weights NaN and torch's loss raised "all elements of input should be
    between 0 and 1" with a traceback."""
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(
        main,
        ["train", "--data", str(tiny_faces), "--out", str(out), "--epochs", "2", "--lr", "1e30",
         "--batch-size", "8", "--workers", "0"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "onnxedge: error: training diverged: the model's outputs are not finite at step" in (
        result.output
    )
    assert "lower --lr" in result.output
    assert not out.exists()


def test_no_readable_training_image_is_one_line_and_makes_no_folder(tiny_faces, tmp_path):
    """With the default BatchNorm the initialisation's sample came first: torch.stack([]) and a
    traceback, and the --out folder made before the check stayed, empty."""
    import shutil

    root = Path(shutil.copytree(tiny_faces, tmp_path / "faces"))
    for image in (root / IMAGES).iterdir():
        image.write_bytes(b"")
    out = tmp_path / "new" / "c.safetensors"
    result = CliRunner().invoke(
        main, ["train", "--data", str(root), "--out", str(out), "--epochs", "1", "--workers", "0"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().startswith("onnxedge: error: no image of the train split could")
    assert not (tmp_path / "new").exists()


def _class_folders(faces: Path, root: Path) -> Path:
    data = open_dataset(faces)
    for split in data.splits.values():
        for path, label in zip(split.paths, split.labels, strict=True):
            folder = root / ("smiling" if label else "not_smiling")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / path.name).write_bytes(path.read_bytes())
    return root


def test_unreadable_names_are_escaped_in_the_lines_the_json_and_the_checkpoint(
    tiny_faces, tmp_path
):
    import os

    from onnxedge.runtime.data.folders import hashed_split

    root = _class_folders(tiny_faces, tmp_path / "cf")
    odd = [
        next(n for i in range(99) if hashed_split(n := os.fsdecode(pattern % i)) == "train")
        for pattern in (b"bad\nname%d.jpg", b"bad\xff%d.jpg")
    ]
    for name in odd:
        (root / "smiling" / name).write_bytes(b"")
    os.rename(root / "not_smiling", root / os.fsdecode(b"not_sm\xe9iling"))
    out, report = tmp_path / "c.safetensors", tmp_path / "t.json"
    args = ["train", "--data", root, "--out", out, "--epochs", "1", "--workers", "0"]
    result = CliRunner().invoke(main, [*map(str, args), "--json", str(report)])
    assert result.exit_code == 0, result.output
    listed = result.stderr.split("unreadable image(s):\n")[1].splitlines()[:2]
    assert sorted(line.rsplit("/", 1)[1] for line in listed) == sorted(
        [odd[0].replace("\n", "\\n"), odd[1].replace("\udcff", "\\377")]
    )
    raw = report.read_bytes()
    raw.decode("utf-8")  # strict: no lone surrogate
    failed = json.loads(raw)["failed_files"]
    assert any(name.endswith("bad\\377" + odd[1][4:]) for name in failed), failed
    info = read_checkpoint_info(out)
    assert "not_sm\\351iling" in info.class_names
    json.dumps(info.labels, ensure_ascii=False).encode("utf-8")  # no lone surrogate
