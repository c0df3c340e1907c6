"""Each export step's numerical verification can fail: a step that changes the output is caught."""

from __future__ import annotations

import dataclasses

import onnx
import pytest

from onnxedge.export import gap
from onnxedge.export.pipeline import ExportRequest, export_model
from onnxedge.export.verify import verify_against_torch, verify_onnx_step
from onnxedge.runtime.errors import OnnxEdgeError


def _with_global_max_pool(model: onnx.ModelProto) -> onnx.ModelProto:
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    for node in broken.graph.node:
        if node.op_type == "GlobalAveragePool":
            node.op_type = "GlobalMaxPool"
    return broken


def test_a_lowering_that_changes_the_output_stops_the_export(tmp_path, monkeypatch):
    real = gap.canonicalize_gap_head

    def wrong_lowering(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        return dataclasses.replace(result, model=_with_global_max_pool(result.model))

    monkeypatch.setattr(gap, "canonicalize_gap_head", wrong_lowering)
    with pytest.raises(OnnxEdgeError, match=r"GAP lowering changed the model's output: at batch"):
        export_model(ExportRequest(out=tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_verify_onnx_step_passes_on_identity_and_fails_on_a_change(smile_bundle):
    model = onnx.load(str(smile_bundle / "model.onnx"))
    assert verify_onnx_step("identity", model, model)
    step = verify_onnx_step("max instead of mean", model, _with_global_max_pool(model))
    assert not step and step.max_abs_error > 1e-5
    with pytest.raises(OnnxEdgeError, match="max instead of mean changed the model's output"):
        step.raise_if_failed()


def test_verify_against_torch_fails_for_another_module(smile_bundle):
    from onnxedge.models import get_model_spec
    from onnxedge.models.weights import seeded

    model = onnx.load(str(smile_bundle / "model.onnx"))
    build = get_model_spec("smile_cnn").build
    same, _ = seeded(build, 0)
    other, _ = seeded(build, 1)
    assert verify_against_torch(same.eval(), model)
    assert not verify_against_torch(other.eval(), model)


def test_simplify_that_loses_the_batch_symbol_is_refused(monkeypatch):
    import onnxsim

    from onnxedge.export.simplify import simplify_model

    graph = onnx.parser.parse_graph("g (float[N, 4] x) => (float[N, 4] y) { y = Relu (x) }")
    model = onnx.helper.make_model(graph)

    def static_batch(m, **kwargs):
        out = onnx.ModelProto()
        out.CopyFrom(m)
        for value in (*out.graph.input, *out.graph.output):
            value.type.tensor_type.shape.dim[0].dim_value = 1
        return out, True

    monkeypatch.setattr(onnxsim, "simplify", static_batch)
    with pytest.raises(OnnxEdgeError, match=r"onnxsim changed the graph's input/output dims"):
        simplify_model(model)


def _scaled(offset: float) -> onnx.ModelProto:
    """y = 1000 x + offset: logits-sized outputs (up to 1000) with an additive error."""
    import onnx.parser

    return onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[N, 4] x) => (float[N, 4] y) {{
            k = Constant <value = float {{1000.0}}> ()
            c = Constant <value = float {{{offset}}}> ()
            big = Mul (x, k)
            y = Add (big, c)
        }}
        """
    )


def test_verify_atol_is_relative_to_the_output_scale():
    # 1e-4 on outputs up to 1000 is float32 rounding, not a change: it passes (atol 1e-5 x 1000)
    assert verify_onnx_step("rounding", _scaled(0.0), _scaled(1e-4))
    # 0.1 on the same outputs is a change, wherever the element is small or large
    step = verify_onnx_step("a real change", _scaled(0.0), _scaled(0.1))
    assert not step
    with pytest.raises(
        OnnxEdgeError, match=r"a real change changed the model.s output.*exceeds atol 0.009"
    ):
        step.raise_if_failed()


def _simplified_to(monkeypatch, text: str, fixed_output: list[int]) -> onnx.ModelProto:
    """simplify_model of the graph ``text``, onnxsim made to give its output ``fixed_output``."""
    import onnxsim

    from onnxedge.export.simplify import simplify_model

    def settles(m, **kwargs):
        out = onnx.ModelProto()
        out.CopyFrom(m)
        dims = out.graph.output[0].type.tensor_type.shape.dim
        for dim, value in zip(dims, fixed_output, strict=True):
            dim.dim_value = value
        return out, True

    monkeypatch.setattr(onnxsim, "simplify", settles)
    return simplify_model(onnx.helper.make_model(onnx.parser.parse_graph(text)))


def test_simplify_may_settle_an_output_dim_of_a_graph_with_fixed_inputs(monkeypatch):
    # torch's TorchScript exporter at batch 1 may leave the output [Gemm1154_dim_0, 1000]
    # (efficientnet_edge_small_b): with every input dim fixed, onnxsim's 1 is no change.
    text = "g (float[1, 4] x) => (float[Gemm_dim_0, 4] y) { y = Relu (x) }"
    simplified = _simplified_to(monkeypatch, text, [1, 4])
    assert [d.dim_value for d in simplified.graph.output[0].type.tensor_type.shape.dim] == [1, 4]


@pytest.mark.parametrize(
    ("text", "fixed_output"),
    [
        # The input's batch is symbolic: an output dim of the graph's own naming may hang on it.
        ("g (float[N, 4] x) => (float[Gemm_dim_0, 4] y) { y = Relu (x) }", [1, 4]),
        # A number changed is a change, fixed inputs or not.
        ("g (float[1, 4] x) => (float[1, 4] y) { y = Relu (x) }", [2, 4]),
    ],
)
def test_simplify_settling_other_output_dims_is_refused(monkeypatch, text, fixed_output):
    with pytest.raises(OnnxEdgeError, match=r"onnxsim changed the graph's input/output dims"):
        _simplified_to(monkeypatch, text, fixed_output)
