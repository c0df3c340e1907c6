"""The export grid: every head x both exporters x two opsets ends in one GlobalAveragePool, a
symbolic batch dim, and ONNX Runtime CPU output within 1e-5 of PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from onnxedge.export.pipeline import ExportRequest, export_model
from onnxedge.runtime.check.check import check_path
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session

HEADS = ("avgpool", "adaptive", "mean")
# The oldest opset each exporter builds natively (torchscript 17: ReduceMean axes as an attribute;
# dynamo 18: axes as an input) and a newer one.
EXPORTER_OPSETS = [("dynamo", 18), ("dynamo", 20), ("torchscript", 17), ("torchscript", 20)]
BATCHES = (1, 2, 9)


@pytest.mark.slow
@pytest.mark.parametrize("exporter,opset", EXPORTER_OPSETS)
@pytest.mark.parametrize("head", HEADS)
def test_export_grid(tmp_path, head, exporter, opset):
    request = ExportRequest(head=head, exporter=exporter, opset=opset, out=tmp_path / "b")
    result = export_model(request)
    model = onnx.load(str(result.out / "model.onnx"))

    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GlobalAveragePool") == 1, ops
    assert "AveragePool" not in ops and "ReduceMean" not in ops, ops
    assert {e.version for e in model.opset_import if e.domain in ("", "ai.onnx")} == {opset}

    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert out.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [3, 64, 64]

    report = check_path(result.out)
    assert report, [str(i) for i in report.failures]

    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["head"] == head and manifest["exporter"] == exporter
    assert manifest["opset"] == opset

    # ORT-CPU against PyTorch at batch 1, 2 and an odd batch above 8.
    from onnxedge.models import get_model_spec
    from onnxedge.models.weights import seeded

    spec = get_model_spec("smile_cnn")
    module, _ = seeded(lambda: spec.build(head), request.seed)
    module.eval()
    session = make_session(result.out / "model.onnx", SessionConfig(provider="cpu"))
    rng = np.random.default_rng(7)
    for batch in BATCHES:
        x = rng.random((batch, 3, 64, 64), dtype=np.float32)
        (actual,) = session.run(None, {"input": x})
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        assert actual.shape == (batch, 1)
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
