"""The int8 and fp16 variants of a model whose classifier comes before the pool (SqueezeNet: a
1x1 Conv to the classes, a ReLU, the pool, a Flatten), which `onnxedge check` passes: the head
they keep in float is that Conv and what follows it. They were refused ("expected a classifier
between the pool and the output")."""

from __future__ import annotations

import json

import import_models as models
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image

from onnxedge.runtime.cli import main
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.variants.graph import head_node_names


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_head_runs_from_the_conv_before_the_pool_to_the_output():
    names = head_node_names(models.classifier_before_pool())
    assert sorted(names) == ["classifier", "classifier_relu", "flatten", "gap"]


@pytest.mark.parametrize("activation", ["HardSwish", "PRelu", "Elu", "Tanh", "Clip"])
def test_the_classifiers_own_activation_of_any_kind_is_walked_through(activation):
    model = models.classifier_before_pool()
    (node,) = [n for n in model.graph.node if n.name == "classifier_relu"]
    node.op_type = activation
    model.opset_import[0].version = max(14, model.opset_import[0].version)  # HardSwish: 14
    if activation == "PRelu":
        slope = onnx.numpy_helper.from_array(np.full((3, 1, 1), 0.1, np.float32), "slope")
        model.graph.initializer.append(slope)
        node.input.append("slope")
    onnx.checker.check_model(model)
    names = head_node_names(model)
    assert sorted(names) == ["classifier", "classifier_relu", "flatten", "gap"]


@pytest.mark.parametrize(
    ("op", "extra", "attrs"),
    [
        ("ReduceMean", ["axis"], {}),  # opset 18: axes are an input, here a Constant node
        ("Add", ["n_float"], {}),  # the batch size, taken from the image's shape, as a float
        ("Mul", ["ones"], {}),  # ones made by ConstantOfShape at the shape of the logits
    ],
)
def test_shapes_axes_and_indices_in_the_head_are_not_walked_into(op, extra, attrs):
    """An op after the classifier whose other input is an axis or a shape computed from the
    image's shape: the walk took the Shape node, and through it the backbone, for the head
    (kept in float32 by the variants), and int64 nodes kept "in float32" broke fp16."""
    model = models.classifier_before_pool()
    model.opset_import[0].version = 18
    graph = model.graph
    one = onnx.numpy_helper.from_array(np.ones(1, np.float32))
    axis = onnx.numpy_helper.from_array(np.array([1], np.int64))
    graph.node.extend(
        [
            helper.make_node("Shape", ["r"], ["r_shape"], name="shape"),
            helper.make_node("Slice", ["r_shape", "zero", "one"], ["n"], name="dims"),
            helper.make_node("Constant", [], ["axis"], name="axis", value=axis),
            helper.make_node("Cast", ["n"], ["n_float"], name="n_float", to=TensorProto.FLOAT),
            helper.make_node("Shape", ["logits"], ["logits_shape"], name="logits_shape"),
            helper.make_node(
                "ConstantOfShape",
                ["logits_shape"],
                ["ones"],
                name="ones",
                value=one,
            ),
            helper.make_node(op, ["logits", *extra], ["out"], name="last", **attrs),
        ]
    )
    graph.initializer.extend(
        onnx.numpy_helper.from_array(np.array([v], np.int64), name)
        for name, v in (("zero", 0), ("one", 1))
    )
    del graph.output[:]
    shape = ["N", 1] if op == "ReduceMean" else ["N", 3]
    graph.output.append(helper.make_tensor_value_info("out", TensorProto.FLOAT, shape))
    onnx.checker.check_model(model, full_check=True)
    names = set(head_node_names(model))
    assert {"classifier", "classifier_relu", "flatten", "gap", "last"} <= names
    assert not names & {"conv", "relu", "shape", "dims", "axis", "logits_shape"}, names


def test_a_pool_with_nothing_linear_before_or_after_it_is_still_refused():
    model = models.classifier_before_pool()
    graph = model.graph
    # the pool reads the image itself: no Conv, Gemm or MatMul anywhere on its path
    (gap,) = [n for n in graph.node if n.op_type == "GlobalAveragePool"]
    gap.input[0] = "x"
    keep = {"gap", "flatten"}
    nodes = [n for n in graph.node if n.name in keep]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.output[0].CopyFrom(helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None))
    with pytest.raises(OnnxEdgeError, match=r"expected a classifier .* found none"):
        head_node_names(model)


def test_no_classifier_is_found_across_a_residual_join_before_the_pool():
    """A residual Add (two branches joined) before the pool is where the walk stops: taking one
    branch's Conv as the classifier would make the whole network the head, kept in float."""
    model = models.classifier_before_pool()
    graph = model.graph
    nodes = {n.name: n for n in graph.node}
    nodes["classifier"].output[0] = "branch"
    join = helper.make_node("Add", ["branch", "r"], ["z"], name="join")
    graph.node.insert(list(graph.node).index(nodes["classifier_relu"]), join)
    # the residual adds the 8-channel features: the classifier now keeps 8 channels
    (head_w,) = [i for i in graph.initializer if i.name == "head_w"]
    head_w.CopyFrom(onnx.numpy_helper.from_array(np.ones((8, 8, 1, 1), np.float32), "head_w"))
    onnx.checker.check_model(model)
    with pytest.raises(OnnxEdgeError, match=r"expected a classifier .* found none"):
        head_node_names(model)


def _class_folders(root, classes=3, per_class=3, side=24):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k in range(classes):
            folder = root / split / f"class_{k}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_int8_and_fp16_of_a_squeezenet_head_are_made_with_that_head_in_float(tmp_path):
    source = models.save(models.classifier_before_pool(), tmp_path / "squeeze.onnx")
    bundle = tmp_path / "bundle"
    result = invoke("import", source, "--out", bundle, "--reference", "float32")
    assert result.exit_code == 0, result.output
    check = invoke("check", bundle)
    assert check.exit_code == 0, check.output
    data = _class_folders(tmp_path / "data")
    out = tmp_path / "optimized"
    args = ["--data", data, "--int8", "--fp16", "--calibration-size", 4, "--no-gate"]
    result = invoke("optimize", bundle, *args, "--out", out)
    assert result.exit_code == 0, result.output
    variants = json.loads((out / "manifest.json").read_text())["variants"]
    head = ["classifier", "classifier_relu", "flatten", "gap"]
    assert sorted(variants["int8"]["made"]["kept_float"]) == head
    assert sorted(variants["fp16"]["made"]["kept_float32"]["nodes"]) == head
    int8 = onnx.load(str(out / variants["int8"]["file"]))
    (classifier,) = [n for n in int8.graph.node if n.name == "classifier"]
    assert classifier.op_type == "Conv"  # in float, not a QLinearConv
    assert any("Quant" in n.op_type for n in int8.graph.node)  # the rest is quantised
    evaluated = invoke("evaluate", out, "--data", data, "--variant", "int8")  # fp16: CUDA only
    assert evaluated.exit_code == 0, evaluated.output


def test_a_gate_on_a_few_images_is_warned_about_and_a_fraction_is_refused(tmp_path, caplog):
    source = models.save(models.classifier_before_pool(), tmp_path / "squeeze.onnx")
    bundle = tmp_path / "bundle"
    assert invoke("import", source, "--out", bundle, "--reference", "float32").exit_code == 0
    data = _class_folders(tmp_path / "data")
    args = ["optimize", bundle, "--data", data, "--int8", "--calibration-size", 4]
    fraction = invoke(*args, "--min-agreement", "0.995", "--out", tmp_path / "o")
    assert fraction.exit_code == 2, fraction.output
    assert "expected a percent such as 97" in fraction.output
    assert "give 99.5 for 99.5%" in fraction.output
    assert not (tmp_path / "o").exists()
    result = invoke(
        *args, "--min-agreement", "0", "--max-accuracy-drop", "100", "--out", tmp_path / "o"
    )
    assert result.exit_code == 0, result.output
    assert (
        f"{data}: the gates judge only 9 test images, each 11.11% of the label agreement; 200 or "
        "more make a gate's verdict mean more"
    ) in caplog.text


def test_a_flatten_by_the_batchs_size_keeps_only_the_head_in_float(tmp_path):
    """``x.view(x.size(0), -1)`` after the classifier, as every pytorchcv model does, exported
    by torchscript with a dynamic batch: the Reshape's shape is Shape -> Gather -> Unsqueeze ->
    Concat. Those int64 nodes were taken into the head kept in float32, and the fp16
    conversion's graph then failed onnx.checker (SSA), so a default `optimize` wrote nothing."""
    import torch
    from torch import nn

    from onnxedge.runtime.variants.fp16 import convert_fp16

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.output = nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.output(self.pool(self.body(x)))
            return x.view(x.size(0), -1)

    torch.manual_seed(0)
    source = tmp_path / "m.onnx"
    torch.onnx.export(
        Net().eval(), (torch.zeros(1, 3, 16, 16),), str(source), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
    )  # fmt: skip
    model = onnx.load(str(source))
    ops = {n.name: n.op_type for n in model.graph.node}
    assert {"Shape", "Gather", "Concat"} <= set(ops.values())
    assert sorted(ops[n] for n in head_node_names(model)) == ["Conv", "Reshape"]
    made = convert_fp16(source, tmp_path / "fp16.onnx")
    assert len(made["kept_float32"]["nodes"]) == 2
    import onnxruntime as ort

    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    runs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        for p in (source, tmp_path / "fp16.onnx")
    ]
    np.testing.assert_allclose(runs[1], runs[0], atol=1e-2)
