"""A user's own model file through `onnxedge export --model file.py:factory` into bundles that pass
`check` and `parity` with their own class names, for each output kind and a dynamic H x W; and
parity fails on such a bundle when the model changed."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.cli import main
from onnxedge.runtime.parity import load_golden, make_targets, run_parity

USER_MODEL = """
from torch import nn

from onnxedge.models.families import mobilenetv3_like, squeeze_excite


def birds(num_classes=3, final="logits"):
    return mobilenetv3_like(num_classes=num_classes, width=8, final=final)


def smiles(final="logits"):
    return squeeze_excite(num_classes=1, width=8, final=final)
"""


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user")
    (folder / "zoo_of_mine.py").write_text(textwrap.dedent(USER_MODEL))
    (folder / "birds.txt").write_text("robin\n\nwren \nkestrel\n")
    (folder / "smiles.txt").write_text("not smiling\nsmiling\n")
    return folder


def export(user_dir: Path, out: Path, factory: str, *args: str) -> dict:
    result = CliRunner().invoke(
        main,
        [
            "export",
            "--model",
            f"{user_dir / 'zoo_of_mine.py'}:{factory}",
            "--out",
            str(out),
            *args,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "PASSED | gap_head" in result.output
    return json.loads((out / "manifest.json").read_text())


def parity(bundle: Path):
    opened = Bundle.open(bundle)
    return run_parity(opened, load_golden(opened), targets=make_targets(["cpu"]))


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory,args,kind,labels",
    [
        (
            "birds",
            ["--input-shape", "3,48,64", "--labels", "birds.txt"],
            "logits",
            {"classes": ["robin", "wren", "kestrel"]},
        ),
        (
            "birds",
            ["--input-shape", "3,64,64", "--model-arg", "final='softmax'", "--dynamic-spatial"],
            "probabilities",
            {"classes": ["class_0", "class_1", "class_2"]},
        ),
        (
            "smiles",
            ["--input-shape", "3,40,40", "--labels", "smiles.txt", "--exporter", "torchscript"],
            "logit",
            {"threshold": 0.5, "positive": "smiling", "negative": "not smiling"},
        ),
    ],
)
def test_user_model_file_to_a_bundle_that_passes_check_and_parity(
    user_dir, tmp_path, factory, args, kind, labels
):
    args = [str(user_dir / a) if a.endswith(".txt") else a for a in args]
    manifest = export(user_dir, tmp_path / "b", factory, *args)
    assert manifest["output"]["kind"] == kind
    assert manifest["labels"] == labels
    assert manifest["factory"].endswith(f"zoo_of_mine.py:{factory}")

    check = CliRunner().invoke(main, ["check", str(tmp_path / "b")])
    assert check.exit_code == 0, check.output

    report = parity(tmp_path / "b")
    assert report, report.lines()
    assert report.ran == 4 and report.preprocessing.status == "passed"
    for row in report.rows:
        assert row.labels is not None and row.labels.agree == row.batch
        assert row.logits is not None and row.logits.max_abs_error < 1e-4


@pytest.mark.slow
def test_parity_fails_when_a_k_class_model_changed(user_dir, tmp_path):
    bundle = tmp_path / "b"
    export(user_dir, bundle, "birds", "--input-shape", "3,48,64")
    model = onnx.load(str(bundle / "model.onnx"))
    # Nudge the classifier's bias: the golden references no longer match.
    classifier = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    bias = next(i for i in model.graph.initializer if i.name == classifier.input[2])
    values = onnx.numpy_helper.to_array(bias).copy()
    values[1] += 1e-3
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(bundle / "model.onnx"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    from onnxedge.runtime.bundle.hashing import sha256_file

    manifest["files"]["model.onnx"]["sha256"] = sha256_file(bundle / "model.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    report = parity(bundle)
    assert not report
    assert all(r.status == "failed" for r in report.rows)
    assert all("logits outside " in r.reason for r in report.rows)
    assert np.isclose(max(r.logits.max_abs_error for r in report.rows), 1e-3, rtol=0.01)


@pytest.fixture(scope="module")
def birds_bundle(user_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("birds") / "b"
    export(
        user_dir, out, "birds", "--input-shape", "3,48,64", "--labels", str(user_dir / "birds.txt")
    )
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    for i in range(3):
        pixels = rng.integers(0, 256, (60 + 10 * i, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"bird{i}.png")
    return folder


@pytest.mark.slow
def test_predict_gives_class_names_top_k_and_probabilities(birds_bundle, images):
    from onnxedge.runtime.classifier.classifier import Classifier

    clf = Classifier.from_bundle(birds_bundle, provider="cpu")
    assert clf.classes == ("robin", "wren", "kestrel") and clf.threshold is None
    expected = clf.predict_images(sorted(images.iterdir()))
    for p in expected:
        assert p.label == clf.classes[p.class_index]
        assert p.probability == max(p.probabilities)
        assert np.isclose(sum(p.probabilities), 1.0)

    result = CliRunner().invoke(main, ["predict", str(birds_bundle), str(images), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in rows] == [p.label for p in expected]
    assert all(set(r["probabilities"]) == {"robin", "wren", "kestrel"} for r in rows)
    assert all(np.isclose(sum(r["probabilities"].values()), 1.0) for r in rows)

    text = CliRunner().invoke(main, ["predict", str(birds_bundle), str(images), "--top-k", "2"])
    assert text.exit_code == 0, text.output
    first = text.stdout.splitlines()[0].split("\t")
    top2 = expected[0].top(2)
    assert first[1:] == [f"{top2[0][1]:.4f}", top2[0][0], f"{top2[1][0]}:{top2[1][1]:.4f}"]

    top1 = CliRunner().invoke(
        main, ["predict", str(birds_bundle), str(images), "--json", "--top-k", "1"]
    )
    assert all(len(json.loads(line)["probabilities"]) == 1 for line in top1.stdout.splitlines())

    refused = CliRunner().invoke(
        main, ["predict", str(birds_bundle), str(images), "--threshold", "0.3"]
    )
    # a usage error (exit 2), as --top-k on a model with one output is
    assert refused.exit_code == 2 and "a threshold applies to a model with one output" in (
        refused.output
    )
    with pytest.raises(ValueError, match="a threshold applies to a model with one output"):
        Classifier.from_bundle(birds_bundle, provider="cpu", threshold=0.3)
    with pytest.raises(ValueError, match="expected k of at least 1 or None, got 0"):
        expected[0].top(0)


@pytest.mark.slow
def test_a_logit_bundle_predicts_the_sigmoid_of_its_logit(user_dir, tmp_path, images):
    from onnxedge.runtime.classifier.classifier import Classifier

    bundle = tmp_path / "b"
    export(
        user_dir,
        bundle,
        "smiles",
        "--input-shape",
        "3,40,40",
        "--labels",
        str(user_dir / "smiles.txt"),
    )
    clf = Classifier.from_bundle(bundle, provider="cpu")
    x = np.random.default_rng(0).random((4, 3, 40, 40), dtype=np.float32)
    (logit,) = clf.session.run(None, {"input": x})
    np.testing.assert_allclose(clf.probabilities(x), 1 / (1 + np.exp(-logit[:, 0])), rtol=1e-6)
    labels = {p.label for p in clf.predict_array(x)}
    assert labels <= {"smiling", "not smiling"}
    refused = CliRunner().invoke(main, ["predict", str(bundle), str(images), "--top-k", "2"])
    assert refused.exit_code == 2 and "--top-k applies to a model with K classes" in refused.output


@pytest.mark.slow
def test_a_factory_with_a_checkpoint_and_its_usage_errors(user_dir, tmp_path):
    import torch
    from safetensors.torch import save_file

    from onnxedge.models.loader import build_module
    from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session

    reference = f"{user_dir / 'zoo_of_mine.py'}:birds"
    torch.manual_seed(3)
    trained = build_module(reference, {"num_classes": 4}).eval()
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    manifest = export(
        user_dir,
        tmp_path / "b",
        "birds",
        "--model-arg",
        "num_classes=4",
        "--input-shape",
        "3,32,48",
        "--checkpoint",
        str(tmp_path / "w.safetensors"),
    )
    assert manifest["weights"]["source"] == "checkpoint"
    assert manifest["model_args"] == {"num_classes": 4}
    x = np.random.default_rng(2).random((2, 3, 32, 48), dtype=np.float32)
    session = make_session(tmp_path / "b" / "model.onnx", SessionConfig(provider="cpu"))
    with torch.no_grad():
        expected = trained(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-5)

    base = ["export", "--model", reference, "--out", str(tmp_path / "c")]
    no_shape = CliRunner().invoke(main, base)
    assert no_shape.exit_code == 2 and "needs --input-shape C,H,W" in no_shape.output
    head = CliRunner().invoke(main, [*base, "--input-shape", "3,32,32", "--head", "mean"])
    assert head.exit_code == 2 and "--head applies to registered models" in head.output
    two = CliRunner().invoke(main, [*base, "--input-shape", "2,32,32"])
    assert two.exit_code == 1 and "expected 3 input channels (RGB images) or 1" in two.output
    typo = CliRunner().invoke(main, ["export", "--model", "smile_cn", "--out", str(tmp_path / "d")])
    assert typo.exit_code == 1 and "unknown model 'smile_cn'" in typo.output
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_the_live_reference_rebuilds_the_factory_and_fails_when_its_code_changed(tmp_path):
    """``--reference live`` (and bench's PyTorch peers) rebuild a factory's bundle from the
    factory and its model_args, seeded as at the export, and judge the K logits as logits (it
    was refused: "not in onnxedge's registry"). The factory is called as its code is now: a
    changed model is a failed row, and a factory that does not load is why no live reference."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "zoo_of_mine.py").write_text(textwrap.dedent(USER_MODEL))
    bundle = tmp_path / "b"
    export(folder, bundle, "birds", "--input-shape", "3,48,64", "--seed", "3")
    args = ["parity", str(bundle), "--reference", "live", "--batch-sizes", "1,2"]
    args += ["--providers", "cpu"]
    live = CliRunner().invoke(main, args)
    assert live.exit_code == 0, live.output
    assert f"reference: live: {folder / 'zoo_of_mine.py'}:birds (seed 3) in PyTorch" in live.output
    assert "parity: 2 passed, 0 failed" in live.output

    changed = USER_MODEL + textwrap.dedent(
        """
        _birds = birds


        def birds(**kw):  # the same model, its last bias nudged
            import torch

            model = _birds(**kw)
            with torch.no_grad():
                list(model.parameters())[-1].add_(0.01)
            return model
        """
    )
    (folder / "zoo_of_mine.py").write_text(changed)
    for name in [n for n in sys.modules if n.startswith("onnxedge_user_zoo_of_mine")]:
        del sys.modules[name]  # loaded again, as by a new command
    failed = CliRunner().invoke(main, args)
    assert failed.exit_code == 1, failed.output
    assert "FAILED | cpu | batch 1 |" in failed.output

    (folder / "zoo_of_mine.py").unlink()
    gone = CliRunner().invoke(main, args)
    assert gone.exit_code == 1
    assert "which does not load here: expected a Python file for --model" in gone.output
