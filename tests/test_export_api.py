"""`export_bundle`, the Python API, on the hand-written families: any input size, every output kind,
pre-logits heads and SE blocks lowered and checked; and each way a user's model can be wrong is
one clear line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from onnxedge.export.pipeline import export_bundle, labels_for
from onnxedge.models import families
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.check.check import check_path
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity import load_golden

SPATIAL_OPS = {"AveragePool", "ReduceMean"}

# family, exporter, opset, input shape, what check's line must say besides the pass
CASES = [
    ("depthwise_silu", "dynamo", 18, (3, 64, 64), "into the classifier (Conv"),
    ("depthwise_silu", "torchscript", 17, (3, 48, 80), "into the classifier (Conv"),
    ("squeeze_excite", "dynamo", 18, (3, 40, 56), "ReduceMean(s) not lowered to GlobalAveragePool"),
    (
        "mobilenetv3_like",
        "dynamo",
        18,
        (3, 48, 80),
        "pre-logits layers (Conv, Add, Clip, Mul, Div)",
    ),
    ("mobilenetv3_like", "torchscript", 17, (3, 64, 64), "2 other GlobalAveragePool(s)"),
    ("convnext_like", "dynamo", 18, (3, 64, 96), "pre-logits layers (LayerNormalization)"),
    # opset 14 has no LayerNormalization: its ReduceMean over channels is walked through
    ("convnext_like", "torchscript", 14, (3, 64, 64), "ReduceMean"),
    ("grouped_dilated", "dynamo", 18, (3, 56, 40), "into the classifier (Gemm"),
]


@pytest.mark.slow
@pytest.mark.parametrize("family,exporter,opset,shape,said", CASES)
def test_each_family_exports_lowers_and_passes_check(
    tmp_path, family, exporter, opset, shape, said
):
    torch.manual_seed(0)
    module = getattr(families, family)(num_classes=7)
    result = export_bundle(
        module, input_shape=shape, out=tmp_path / "b", exporter=exporter, opset=opset
    )
    model = onnx.load(str(result.out / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "AveragePool" not in ops, ops
    assert ops.count("GlobalAveragePool") >= 1
    gap_head = next(i for i in result.check.items if i.name == "gap_head")
    assert gap_head and said in gap_head.detail, gap_head
    assert result.output_kind == "logits"
    (out,) = model.graph.output
    assert out.name == "logits"
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 7]
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["input"]["shape"] == ["batch", *shape]
    assert manifest["output"]["kind"] == "logits"
    assert manifest["labels"] == {"classes": [f"class_{i}" for i in range(7)]}
    assert manifest["preprocessing"]["resize"] == list(shape[1:])
    assert all(step["passed"] for step in manifest["graph"]["verified_steps"])
    assert check_path(result.out / "model.onnx")
    # ONNX Runtime against PyTorch at a batch the export did not verify.
    x = np.random.default_rng(3).random((3, *shape), dtype=np.float32)
    (actual,) = make_session(result.out / "model.onnx", SessionConfig(provider="cpu")).run(
        None, {"input": x}
    )
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs,kind,name",
    [
        ({"num_classes": 5, "final": "softmax"}, "probabilities", "probabilities"),
        ({"num_classes": 1}, "logit", "logit"),
        ({"num_classes": 1, "final": "sigmoid"}, "sigmoid-probability", "prob"),
    ],
)
def test_output_kinds(tmp_path, kwargs, kind, name):
    torch.manual_seed(0)
    module = families.depthwise_silu(width=8, **kwargs)
    labels = ["cat", "dog"] if kwargs["num_classes"] == 1 else None
    result = export_bundle(module, input_shape=(3, 32, 32), out=tmp_path / "b", labels=labels)
    assert result.output_kind == kind
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["output"]["kind"] == kind and manifest["output"]["name"] == name
    if labels:
        assert manifest["labels"] == {"threshold": 0.5, "positive": "dog", "negative": "cat"}
    with np.load(result.out / "golden.npz") as golden:
        prob, logits = golden["prob_b7_f64"], golden["logits_b7_f64"]
    k = kwargs["num_classes"]
    assert prob.shape == logits.shape == (7, k)
    if kind == "probabilities":
        np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-12)
        centred = logits - logits.mean(axis=1, keepdims=True)
        softmax = np.exp(centred) / np.exp(centred).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(softmax, prob, rtol=1e-9)
    else:
        np.testing.assert_allclose(1 / (1 + np.exp(-logits)), prob, rtol=1e-9)


def test_dynamic_spatial_is_symbolic_and_verified_at_another_size(tmp_path):
    torch.manual_seed(0)
    module = families.mobilenetv3_like(num_classes=3, width=8)
    result = export_bundle(
        module, input_shape=(3, 64, 64), out=tmp_path / "b", dynamic_spatial=True
    )
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["input"]["shape"] == ["batch", 3, "height", "width"]
    assert manifest["preprocessing"]["resize"] == [64, 64]
    steps = [s["step"] for s in manifest["graph"]["verified_steps"]]
    assert "dynamic H x W at 96x128" in steps
    session = make_session(result.out / "model.onnx", SessionConfig(provider="cpu"))
    x = np.random.default_rng(0).random((2, 3, 40, 72), dtype=np.float32)
    (actual,) = session.run(None, {"input": x})
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-4)


def test_golden_inputs_given_as_arrays_join_the_golden_data(tmp_path):
    torch.manual_seed(0)
    arrays = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    result = export_bundle(
        families.grouped_dilated(num_classes=4, width=8),
        input_shape=(3, 32, 32),
        out=tmp_path / "b",
        golden_inputs=arrays,
        labels=["a", "b", "c", "d"],
    )
    batch = load_golden(Bundle.open(result.out)).batches[64]
    np.testing.assert_array_equal(batch.inputs[5:8], arrays)
    assert batch.kinds[5:8] == ("image:input[0]", "image:input[1]", "image:input[2]")


class _Features(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x  # a feature map, not [batch, K]


class _FlattenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize(
    "module,shape,message",
    [
        (
            _Features(),
            (3, 8, 8),
            r"expected the model's output as \[batch, K\].*found \[2, 3, 8, 8\]",
        ),
        (_FlattenLinear(), (3, 16, 16), r"the model rejects an input of shape \[2, 3, 16, 16\]: "),
        (_FlattenLinear(), (2, 8, 8), r"expected 3 input channels \(RGB images\) or 1"),
        (_FlattenLinear(), (3, 8), r"expected the input shape as C, H, W"),
        (families.squeeze_excite(num_classes=3, final="sigmoid"), (3, 32, 32), "multi-label"),
        (families.squeeze_excite(num_classes=1, final="softmax"), (3, 32, 32), "always 1"),
    ],
)
def test_a_model_that_does_not_fit_is_one_line(tmp_path, module, shape, message):
    with pytest.raises(OnnxEdgeError, match=message) as err:
        export_bundle(module, input_shape=shape, out=tmp_path / "b")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "b").exists()


def test_labels_must_match_the_outputs():
    assert labels_for(None, 3) == {"classes": ["class_0", "class_1", "class_2"]}
    assert labels_for(["no", "yes"], 1) == {"threshold": 0.5, "positive": "yes", "negative": "no"}
    with pytest.raises(OnnxEdgeError, match=r"expected 3 class names .* found 2"):
        labels_for(["a", "b"], 3)
    with pytest.raises(OnnxEdgeError, match="expected 2 class names"):
        labels_for(["a", "b", "c"], 1)
    with pytest.raises(OnnxEdgeError, match="distinct class names, found 'a' twice"):
        labels_for(["a", "b", "a"], 3)


def test_a_grayscale_model_exports_with_one_channel_pixels(tmp_path):
    """C = 1 was refused as "RGB images, as the runtime preprocesses them", though the runtime
    takes PIL's "L" pixels and `onnxedge import` makes such bundles."""
    from PIL import Image

    from onnxedge.runtime import check_parity
    from onnxedge.runtime.classifier.classifier import Classifier

    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(4, 2),
    ).eval()
    out = tmp_path / "b"
    export_bundle(module, input_shape=(1, 16, 16), out=out, golden_layers=False)
    spec = Bundle.open(out).manifest["preprocessing"]
    assert (spec["color"], spec["mean"], spec["std"]) == ("L", [0.0], [1.0])
    image = tmp_path / "g.png"
    Image.new("RGB", (20, 24), (200, 40, 90)).save(image)  # made grayscale by the preprocessing
    clf = Classifier.from_bundle(out, provider="cpu")
    x = clf.preprocess(image)
    assert x.shape == (1, 16, 16)
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(x[None])), 1)[0].numpy()
    np.testing.assert_allclose(clf.predict_images([image])[0].probabilities, expected, atol=1e-5)
    parity = check_parity(out, providers=["cpu"])
    assert parity and {r.status for r in parity.report.rows} == {"passed"}
    with pytest.raises(OnnxEdgeError, match=r"1 channel.*expected preprocessing color L"):
        export_bundle(
            module, input_shape=(1, 16, 16), out=tmp_path / "c", preprocessing={"color": "RGB"}
        )
