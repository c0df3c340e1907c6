"""`onnxedge bench --engines`: OpenVINO rows (fp32, bf16 when asked, the bundle's int8 variant)
beside ONNX Runtime in one interleaved run, each output checked first; an OpenVINO that cannot
run is one skipped engine. Tiny iteration counts: no timing is asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from openvino_support import make_int8_qdq, requires_openvino

from onnxedge.runtime.bench import (
    LOW_PRECISION_ATOL,
    BenchModel,
    BenchSettings,
    SkippedEngine,
    TimingPlan,
    bench_models,
    fp32_model,
    ort_engines,
    run_benchmark,
)
from onnxedge.runtime.bench.openvino import OpenVinoEngine, openvino_engines
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.cli import main
from onnxedge.runtime.engines import installed_engines
from onnxedge.runtime.engines.openvino import loader

SHORT = ["--batch-sizes", "1,2", "--iters", "3", "--warmup", "1", "--no-progress"]
PLAN = TimingPlan(warmup=1, iters=2, seconds=None)


def _bench(*args: object):
    return CliRunner().invoke(main, ["bench", *map(str, args)])


@requires_openvino
def test_openvino_rows_beside_onnxruntime(smile_bundle, tmp_path):
    out = tmp_path / "b.json"
    result = _bench(
        smile_bundle, *SHORT, "--peers", "none", "--providers", "cpu",
        "--engines", "onnxruntime,openvino", "--threads", "1", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    ov = [r for r in report["rows"] if r["engine"] == "openvino"]
    assert [r["batch_size"] for r in ov] == [1, 2]
    for row in ov:
        assert row["status"] == "ok" and row["family"] == "openvino"
        assert (row["variant"], row["precision"]) == ("fp32", "")
        assert row["check"].startswith("PASSED vs onnxruntime cpu end-to-end")
        assert row["stats"]["runs"] == 3
    (info,) = [e for e in report["engines"] if e["engine"] == "openvino"]
    # the settings are what OpenVINO reports it compiled, not only what was asked
    assert info["settings"]["inference_precision"] == "f32"
    assert info["settings"]["inference_num_threads"] == 1
    assert info["settings"]["performance_hint"] == "LATENCY"
    assert report["settings"]["engines"] == ["onnxruntime", "openvino"]
    assert report["versions"]["openvino"]
    assert "| 1 | openvino | cpu | end-to-end |" in result.output


def test_default_engines_are_the_installed_ones():
    settings = BenchSettings()
    assert settings.resolved_engines == installed_engines()
    assert settings.to_dict()["engines_source"] == "every one installed"
    assert BenchSettings(engines=("openvino",)).to_dict()["engines_source"] == "--engines"


@requires_openvino
def test_bf16_is_a_row_of_its_own_named_so(smile_bundle):
    if loader.unavailable_reason(loader.OpenVinoConfig(precision="bf16")):
        pytest.skip("this CPU cannot run OpenVINO in bf16")
    bundle = Bundle.open(smile_bundle)
    engines = openvino_engines(bench_models(bundle), ("f32", "bf16"), threads=1)
    assert [e.info.label for e in engines] == [
        "openvino cpu end-to-end",
        "openvino cpu end-to-end bf16",
    ]
    assert engines[1].info.settings["inference_precision"] == "bf16"
    assert engines[0].check_atol is None and engines[1].check_atol == LOW_PRECISION_ATOL
    assert [(e.info.variant, e.info.precision) for e in engines] == [("fp32", ""), ("fp32", "bf16")]


@requires_openvino
def test_int8_variant_runs_on_both_engines_and_is_checked_first(smile_bundle, tmp_path):
    model = Bundle.open(smile_bundle).model_path
    qdq = make_int8_qdq(model, tmp_path / "int8.onnx")
    int8_model = BenchModel("int8", qdq, "onnx", "int8", ("cpu",), True, qdq.stat().st_size)
    settings = BenchSettings(providers=("cpu",), batch_sizes=(1, 4), peers=(), plan=PLAN)
    models = [fp32_model(model), int8_model]
    engines = [
        *(e for m in models for e in ort_engines(m, ("cpu",), threads=1, tf32=False)),
        *openvino_engines(models, ("f32",), threads=1),
    ]
    rows = run_benchmark(engines, (3, 64, 64), settings)
    int8 = [r for r in rows if r.info.variant == "int8"]
    assert [(r.info.engine, r.batch_size, r.status) for r in int8] == [
        ("onnxruntime", 1, "ok"),
        ("openvino", 1, "ok"),
        ("onnxruntime", 4, "ok"),
        ("openvino", 4, "ok"),
    ]
    # OpenVINO's int8 is checked against ONNX Runtime's int8 (the same numerics) at the
    # low-precision atol; ONNX Runtime's int8 is that reference
    checks = [r.check for r in int8]
    assert checks[0] == checks[2] == "reference for int8 models"
    assert checks[1].startswith("PASSED vs onnxruntime cpu end-to-end int8: ")
    assert checks[3].endswith("(atol 0.01)")
    assert all(r.info.settings["model"] == "int8.onnx" for r in int8)


@requires_openvino
def test_an_int8_engine_on_other_weights_fails_the_int8_check(smile_bundle, tmp_path):
    """The int8 rows' check bites too: OpenVINO given another int8 model than ORT's is not
    timed."""
    model = Bundle.open(smile_bundle).model_path
    qdq = make_int8_qdq(model, tmp_path / "int8.onnx")
    other = make_int8_qdq(_other_weights(model, tmp_path / "other.onnx"), tmp_path / "o8.onnx")
    settings = BenchSettings(providers=("cpu",), batch_sizes=(2,), peers=(), plan=PLAN)
    ort_int8 = BenchModel("int8", qdq, "onnx", "int8", ("cpu",), True, 1)
    ov_int8 = BenchModel("int8", other, "onnx", "int8", ("cpu",), True, 1)
    engines = [
        *ort_engines(fp32_model(model), ("cpu",), threads=1, tf32=False),
        *ort_engines(ort_int8, ("cpu",), threads=1, tf32=False),
        *openvino_engines([ov_int8], ("f32",), threads=1),
    ]
    rows = run_benchmark(engines, (3, 64, 64), settings)
    assert [r.status for r in rows] == ["ok", "ok", "failed"]
    assert "output differs from onnxruntime cpu end-to-end int8" in rows[2].reason


@requires_openvino
def test_an_openvino_engine_that_is_not_the_model_fails_the_check(smile_bundle, tmp_path):
    """The output check bites for OpenVINO rows too: a model with other weights is not timed."""
    model = Bundle.open(smile_bundle).model_path
    path = _other_weights(model, tmp_path / "other.onnx")
    settings = BenchSettings(providers=("cpu",), batch_sizes=(2,), peers=(), plan=PLAN)
    engines = [
        *ort_engines(model, ("cpu",), threads=1, tf32=False),
        *openvino_engines([fp32_model(path)], ("f32",), threads=1),
    ]
    rows = run_benchmark(engines, (3, 64, 64), settings)
    (ov,) = [r for r in rows if r.info.engine == "openvino"]
    assert ov.status == "failed" and "output differs from onnxruntime" in ov.reason
    assert ov.stats is None


def _other_weights(model, path):
    """``model`` with every bias + 1: the same graph, other numbers."""
    import onnx
    from onnx import numpy_helper

    other = onnx.load(str(model))
    for init in other.graph.initializer:
        if init.name.endswith("fc.bias") or "bias" in init.name:
            array = numpy_helper.to_array(init) + 1.0
            init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), init.name))
    onnx.save(other, str(path))
    return path


def test_missing_openvino_is_one_skipped_engine(no_openvino, smile_bundle):
    model = fp32_model(smile_bundle / "model.onnx")
    engines = openvino_engines(
        [model, BenchModel("int8", model.path, "onnx", "int8", ("cpu",), True, 1)],
        ("f32", "bf16"),
        threads=1,
    )
    (skipped,) = engines
    assert isinstance(skipped, SkippedEngine) and not isinstance(skipped, OpenVinoEngine)
    assert "pip install 'onnxedge[openvino]'" in skipped.reason
    result = _bench(smile_bundle, *SHORT, "--peers", "none", "--engines", "openvino")
    assert result.exit_code == 1  # nothing measured is not a pass
    assert "no engine could be measured" in result.output and "openvino" in result.output


def test_unknown_engine_is_a_usage_error(smile_bundle):
    result = _bench(smile_bundle, *SHORT, "--engines", "onnxruntime,tvm")
    assert result.exit_code == 2
    assert "unknown engine 'tvm'; expected some of: onnxruntime, openvino" in result.output


@requires_openvino
def test_an_input_read_straight_by_a_cast_keeps_its_name():
    """A compiled port may carry two names (the input's and the Cast's output, fused): the
    session took whichever OpenVINO gave, and a model with float32 inputs and float16 inside
    (what a converter with keep_io_types writes, and the fp16 variant) could not be fed."""
    from onnx import TensorProto, helper

    from onnxedge.runtime.engines.openvino.runner import OpenVinoSession

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input"], ["half"], to=TensorProto.FLOAT16),
            helper.make_node("Relu", ["half"], ["relu"]),
            helper.make_node("Cast", ["relu"], ["prob"], to=TensorProto.FLOAT),
        ],
        "cast_in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = OpenVinoSession(loader.compile_model(model.SerializeToString()))
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["prob"]
    x = np.array([[-1.0, 0.5, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(session.run(None, {"input": x})[0], [[0.0, 0.5, 2.0]])
