"""`onnxedge check` passes on a lowered graph and fails, naming the node, on anything else."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.parser
import pytest
from cli_assertions import unwrap
from click.testing import CliRunner

from onnxedge.export.exporter import export_module
from onnxedge.models import get_model_spec
from onnxedge.runtime.check.check import check_model
from onnxedge.runtime.cli import main

# A classifier "exported elsewhere": other input name, size and opset, a ReduceMean head with
# axes as an attribute, a MatMul + Add classifier and a softmax.
ELSEWHERE = """
<ir_version: 8, opset_import: ["" : 13]>
elsewhere (float[N, 3, 32, 32] images) => (float[N, 10] scores)
    <float[8, 3, 3, 3] w, float[8, 10] fc_w, float[10] fc_b> {
    conv = Conv <pads = [1, 1, 1, 1]> (images, w)
    act = Relu (conv)
    pooled = ReduceMean <axes = [-1, -2], keepdims = 0> (act)
    logits = MatMul (pooled, fc_w)
    biased = Add (logits, fc_b)
    scores = Softmax <axis = 1> (biased)
}
"""


def elsewhere_model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(ELSEWHERE)
    rng = np.random.default_rng(0)
    model.graph.initializer.extend(
        onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        for name, shape in (("w", (8, 3, 3, 3)), ("fc_w", (8, 10)), ("fc_b", (10,)))
    )
    return model


def raw_export(head: str, exporter: str = "dynamo", opset: int = 18) -> onnx.ModelProto:
    spec = get_model_spec("smile_cnn")
    return export_module(spec.build(head), spec.input_shape, exporter=exporter, opset=opset)


def run_check(path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check", str(path)])
    return result.exit_code, unwrap(result.output)  # a long check line is wrapped


def test_check_passes_on_bundle(smile_bundle):
    code, out = run_check(smile_bundle)
    assert code == 0, out
    assert out.count("PASSED |") == 3 and "FAILED" not in out


@pytest.mark.parametrize(
    "head,exporter,found",
    [
        ("avgpool", "dynamo", "AveragePool"),
        ("adaptive", "dynamo", "ReduceMean"),
        ("mean", "dynamo", "ReduceMean"),
        ("avgpool", "torchscript", "AveragePool"),
    ],
)
def test_check_fails_on_unlowered_head(tmp_path, head, exporter, found):
    path = tmp_path / "raw.onnx"
    onnx.save(raw_export(head, exporter, 18 if exporter == "dynamo" else 17), str(path))
    code, out = run_check(path)
    assert code == 1, out
    failed = [line for line in out.splitlines() if line.startswith("FAILED | gap_head")]
    assert len(failed) == 1, out
    assert f"with {found}" in failed[0] and "expected a single GlobalAveragePool" in failed[0]
    assert "PASSED | onnx" in out and "PASSED | batch" in out


def test_check_fails_on_static_batch(tmp_path):
    model = raw_export("adaptive", "torchscript", 17)  # already GlobalAveragePool
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    report = check_model(model)
    (failure,) = report.failures
    assert failure.name == "batch"
    assert "expected a symbolic dim 0, found 4" in failure.detail


def test_check_fails_on_two_batch_symbols(tmp_path):
    model = raw_export("adaptive", "torchscript", 17)
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "other"
    (failure,) = check_model(model).failures
    assert failure.name == "batch" and "one shared symbolic dim 0" in failure.detail


def test_check_fails_on_invalid_graph():
    model = raw_export("adaptive", "torchscript", 17)
    model.graph.node[0].input[0] = "no_such_tensor"
    report = check_model(model)
    assert not report
    assert report.failures[0].name == "onnx"


def test_check_on_a_model_exported_elsewhere(tmp_path):
    src = tmp_path / "elsewhere.onnx"
    onnx.save(elsewhere_model(), str(src))
    code, out = run_check(src)
    assert code == 1 and "with ReduceMean" in out, out
    assert "classifier (MatMul" in out

    dst = tmp_path / "lowered.onnx"
    result = CliRunner().invoke(main, ["simplify", str(src), "-o", str(dst)])
    assert result.exit_code == 0, result.output
    assert "1 GAP rewrite(s)" in result.output
    lowered = onnx.load(str(dst))
    assert lowered.graph.input[0].name == "images"
    assert lowered.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert [n.op_type for n in lowered.graph.node].count("GlobalAveragePool") == 1
    code, out = run_check(dst)
    assert code == 0, out


def test_check_json_report(smile_bundle, tmp_path):
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["check", str(smile_bundle), "--json", str(report_path)])
    assert result.exit_code == 0
    report = json.loads(report_path.read_text())
    assert report["passed"] is True
    assert [c["name"] for c in report["checks"]] == ["onnx", "batch", "gap_head"]


def test_check_rejects_a_bundle_whose_model_changed(bundle_copy):
    model = bundle_copy / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    code, out = run_check(bundle_copy)
    assert code == 1
    assert "does not match the manifest" in out and "Traceback" not in out


def test_check_fails_on_a_cycle_instead_of_hanging(tmp_path):
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        cyclic (float[N, 4] x) => (float[N, 4] y) {
            a = Identity (y)
            y = Identity (a)
        }
        """
    )
    report = check_model(model)
    gap = next(i for i in report.items if i.name == "gap_head")
    assert not gap and "went round a cycle through Identity node" in gap.detail
    assert not next(i for i in report.items if i.name == "onnx")


TWO_INPUTS = """
<ir_version: 8, opset_import: ["" : 18]>
two (float[N, 3, 8, 8] image, int64[N, 1] bucket) => (float[N, 3] out) {
    axes = Constant <value = int64[2] {2, 3}> ()
    pooled = ReduceMean <keepdims = 0> (image, axes)
    scale = Cast <to = 1> (bucket)
    out = Mul (pooled, scale)
}
"""


def test_simplify_feeds_every_input_with_its_own_type(tmp_path):
    src, dst = tmp_path / "two.onnx", tmp_path / "out.onnx"
    onnx.save(onnx.parser.parse_model(TWO_INPUTS), str(src))
    result = CliRunner().invoke(main, ["simplify", str(src), "-o", str(dst)])
    assert "Traceback" not in result.output
    assert "1 GAP rewrite(s)" in result.output, result.output
    assert "verified GAP lowering" in result.output
    # No classifier op: written, but it does not pass the check, so the exit status says so.
    assert result.exit_code == 1 and "FAILED | gap_head" in result.output
    assert dst.is_file()


def test_simplify_drops_the_annotations_a_jax2onnx_file_contradicts(tmp_path):
    """jax2onnx leaves a shape annotation in the layout before its transpose pass
    (tests/foreign/README.md); simplify wrote a file that failed the check on it."""
    from pathlib import Path

    src = Path(__file__).parent / "foreign" / "jax_resnet_jax2onnx.onnx"
    dst = tmp_path / "out.onnx"
    result = CliRunner().invoke(main, ["simplify", str(src), "-o", str(dst)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "annotations: dropped 1 shape annotation(s) (value_info) the graph contradicts: "
        "'relu_out_1' float ['B', 32, 32, 8], computed float ['B', 8, 32, 32]\n"
    ), result.output
    assert "PASSED | onnx |" in result.output
    onnx.checker.check_model(onnx.load(str(dst)), full_check=True)


def test_simplify_output_must_be_a_file(tmp_path):
    src = tmp_path / "elsewhere.onnx"
    onnx.save(elsewhere_model(), str(src))
    result = CliRunner().invoke(main, ["simplify", str(src), "-o", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.output


def test_a_channels_last_map_before_an_adaptive_pool_exports_a_lowerable_head():
    """A LayerNorm over channels through permutes (ConvNeXt's) leaves the last map channels-last;
    torch's decomposition of AdaptiveAvgPool2d(1) then restored that layout with an as_strided,
    which the dynamo exporter wrote as a Gather over computed indices between the pool and the
    classifier: no head any check or lowering recognised. The export now writes a plain mean."""
    import torch
    from torch import nn

    from onnxedge.export.gap import canonicalize_gap_head

    class ChannelNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ChannelNorm(), nn.ReLU())
    module = nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, 2)).eval()
    exported = export_module(module, (3, 16, 16))
    assert "Gather" not in {n.op_type for n in exported.graph.node}
    lowered = canonicalize_gap_head(exported).model
    result = check_model(lowered)
    assert result.passed, [str(c) for c in result.items]
    import onnxruntime as ort

    x = torch.rand(3, 3, 16, 16)
    session = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(out, module(x).detach().numpy(), atol=1e-5)
