"""`onnxedge inspect`: what it reports is what the model and the manifest hold, counted here
independently; a model without a GAP head is reported as such."""

from __future__ import annotations

import json

import numpy as np
import onnx
from cli_assertions import assert_one_line_error
from click.testing import CliRunner
from onnx import TensorProto, helper
from test_optimize import data, edge, trained_bundle  # noqa: F401 (fixtures)

from onnxedge.runtime.cli import main
from onnxedge.runtime.cli.inspect import _gate, _images


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_inspect_a_bundle_as_json(smile_bundle):
    result = CliRunner().invoke(main, ["inspect", str(smile_bundle), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    model = onnx.load(str(smile_bundle / "model.onnx"))
    manifest = json.loads((smile_bundle / "manifest.json").read_text())
    assert found["parameters"] == sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert sum(found["op_counts"].values()) == len(model.graph.node)
    assert found["op_counts"]["GlobalAveragePool"] == 1
    assert found["inputs"][0]["name"] == manifest["input"]["name"]
    assert found["outputs"][0]["name"] == manifest["output"]["name"]
    assert found["opsets"]["ai.onnx"] == manifest["opset"]
    assert found["size_bytes"] == (smile_bundle / "model.onnx").stat().st_size
    assert found["head"]["passed"] is True
    assert found["bundle"]["manifest"]["model"] == manifest["model"]
    assert found["bundle"]["golden"]["batch_sizes"] == manifest["golden"]["batch_sizes"]
    assert found["bundle"]["variants"] == {}
    # The text report went to stderr, with the same figures.
    assert f"params    {found['parameters']:,}" in result.stderr


def test_inspect_lines_fit_120_columns_and_count_the_golden_images(smile_bundle):
    result = invoke("inspect", smile_bundle)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 120 for line in lines), max(lines, key=len)
    (golden,) = [line for line in lines if line.startswith("golden ")]
    assert "batch sizes [1, 2, 7" in golden, golden
    # A golden set drawn from 58 image files is named by count, first and last (all in --json).
    names = [f"{i:06d}.jpg" for i in range(1, 59)]
    assert _images(names) == "58 images (000001.jpg … 000058.jpg)"
    assert _images(names[:2]) == "images 000001.jpg, 000002.jpg"


def test_inspect_a_model_without_a_gap_head(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    result = invoke("inspect", path)
    assert result.exit_code == 0, result.output
    assert "ops       1 nodes: Relu 1" in result.output
    assert "head      FAILED |" in result.output
    assert "input     x  float32  [batch, 4]" in result.output


def test_inspect_something_that_is_not_a_model(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("not a model")
    assert_one_line_error(invoke("inspect", path), str(path))


def test_a_files_external_data_counts_in_its_size_and_missing_is_said_so(tmp_path):
    """inspect FILE counted the .onnx file alone (a dynamo export keeps its weights beside it);
    missing weights were "not an ONNX model: protobuf says ..." in check and inspect."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 256])
    w = onnx.numpy_helper.from_array(np.ones((256, 256), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, location="m.onnx.data")
    result = invoke("inspect", path, "--json", "-")
    assert result.exit_code == 0, result.output
    size = json.loads(result.stdout)["size_bytes"]
    assert size == path.stat().st_size + (tmp_path / "m.onnx.data").stat().st_size
    (tmp_path / "m.onnx.data").unlink()
    for command in ("inspect", "check"):
        result = invoke(command, path)
        assert_one_line_error(result, f"{path}: cannot read its external data: ")
        assert "not an ONNX model" not in result.output


def test_inspect_a_bundle_with_variants_shows_each_with_its_gate(edge):  # noqa: F811
    manifest = json.loads((edge / "manifest.json").read_text())
    made = manifest["variants"]
    assert {"int8", "fp16", "fp32-ort", "int8-ort"} <= set(made)
    result = invoke("inspect", edge, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["bundle"]["variants"]
    assert set(found) == set(made)
    lines = result.stderr.splitlines()
    assert all(len(line) <= 120 for line in lines), max(lines, key=len)
    text = "\n".join(lines).replace("\n          ", " ")  # a long line wraps under its label
    for name, entry in made.items():
        gate = entry["gate"]
        assert found[name]["gated"] is True and found[name]["file"] == entry["file"]
        assert f"file      {entry['file']}  " in text
        agreement = f"agreement {100 * gate['label_agreement']:.2f}%"
        assert (
            f"variant   {name}: {entry['file']}, {entry['precision']} for "
            f"{','.join(entry['providers'])}, gate PASSED on {gate['images']} images"
        ) in text
        assert agreement in text.split(f"variant   {name}:")[1].splitlines()[0]
    assert "variant   none" not in text


def test_a_variant_written_without_its_gate_is_shown_as_such():
    ungated = {"gated": False, "entry": {"gate": {"label_agreement": 0.9, "images": 30}}}
    assert _gate(ungated) == "not gated (--no-gate) on 30 images: agreement 90.00%"
    assert _gate({"gated": True, "entry": {}}) == "gate PASSED: no figures recorded"
