"""The engine layer: OpenVINO compiled with explicit settings and read back, run behind ONNX
Runtime's session interface, and refused with one line where it cannot run."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from openvino_support import make_int8_qdq, requires_openvino

from onnxedge.runtime import engines
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.engines import (
    EngineUnavailable,
    OpenVinoConfig,
    check_engine,
    installed_engines,
    open_session,
)
from onnxedge.runtime.engines.openvino import loader
from onnxedge.runtime.errors import OnnxEdgeError, ProviderUnavailable


@pytest.fixture(scope="module")
def model(smile_bundle):
    return Bundle.open(smile_bundle).model_path


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 64, 64), dtype=np.float32)


# -- names and settings (no openvino needed) ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp16"}, "unknown OpenVINO precision 'fp16'; expected one of: f32, bf16"),
        ({"hint": "FAST"}, "unknown OpenVINO performance hint 'FAST'"),
        ({"device": "GPU"}, "OpenVINO device 'GPU' is not supported; expected CPU"),
    ],
)
def test_config_refuses_unknown_settings(kwargs, message):
    with pytest.raises(OnnxEdgeError, match=message):
        OpenVinoConfig(**kwargs)


@pytest.mark.parametrize("threads", [0, -1, True, 2.0, 10**6])
def test_config_refuses_bad_thread_counts(threads):
    with pytest.raises(ValueError, match="expected threads from 1 to"):
        OpenVinoConfig(threads=threads)


def test_config_sets_precision_and_hint_always_and_threads_when_given():
    assert OpenVinoConfig().properties() == {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
    }
    assert OpenVinoConfig(precision="bf16", threads=2).properties() == {
        "INFERENCE_PRECISION_HINT": "bf16",
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_NUM_THREADS": 2,
    }


@pytest.mark.parametrize("streams", [0, -1, True, 2.0, 10**6])
def test_config_refuses_bad_stream_counts(streams):
    with pytest.raises(ValueError, match="expected streams from 1 to"):
        OpenVinoConfig(streams=streams)


def test_config_sets_streams_when_given():
    props = OpenVinoConfig(threads=2, hint="THROUGHPUT", streams=2).properties()
    assert props["NUM_STREAMS"] == 2 and props["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert "NUM_STREAMS" not in OpenVinoConfig(threads=2).properties()


def test_unknown_engine_names_the_known_ones():
    with pytest.raises(OnnxEdgeError, match="unknown engine 'tensorrt'; expected one of: "):
        check_engine("tensorrt")
    assert check_engine(" OpenVINO ") == "openvino"


def test_onnxruntime_takes_no_precision(model):
    with pytest.raises(OnnxEdgeError, match="precision 'bf16' is an OpenVINO setting"):
        open_session("onnxruntime", model, precision="bf16")
    # a typo was called an OpenVINO setting, as if openvino would take it
    with pytest.raises(OnnxEdgeError, match="unknown OpenVINO precision 'fp32'; expected one of"):
        open_session("onnxruntime", model, precision="fp32")


def test_onnxruntime_session_satisfies_the_protocol_unwrapped(model):
    session = open_session("onnxruntime", model, threads=1)
    assert type(session).__module__.startswith("onnxruntime")
    x = _batch(2)
    (prob,) = session.run(None, {session.get_inputs()[0].name: x})
    assert prob.shape == (2, 1)


# -- unavailable ---------------------------------------------------------------------------------


def test_missing_openvino_is_unavailable_with_the_install_hint(no_openvino, model):
    reason = engines.engine_unavailable_reason("openvino")
    assert reason == (
        "the openvino engine is not installed here; install with: pip install 'onnxedge[openvino]'"
    )
    assert installed_engines() == ("onnxruntime",)
    with pytest.raises(EngineUnavailable, match="not installed here") as err:
        open_session("openvino", model)
    assert isinstance(err.value, ProviderUnavailable)  # what parity and bench report as SKIPPED


def test_a_precision_the_cpu_lacks_is_unavailable_not_a_fallback(monkeypatch, model):
    monkeypatch.setattr(loader, "capabilities", lambda device="CPU": ("FP32", "INT8"))
    with pytest.raises(
        EngineUnavailable, match="requested OpenVINO bf16 inference, which this CPU"
    ):
        loader.compile_model(model, OpenVinoConfig(precision="bf16"))


@requires_openvino
def test_a_precision_other_than_requested_is_an_error(monkeypatch, model):
    real = loader._read_back
    monkeypatch.setattr(loader, "_read_back", lambda c: {**real(c), "inference_precision": "bf16"})
    with pytest.raises(OnnxEdgeError, match="asked OpenVINO for f32 inference, it compiled"):
        loader.compile_model(model, OpenVinoConfig())


@requires_openvino
def test_a_model_openvino_cannot_read_is_an_error_not_unavailable(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(OnnxEdgeError, match="openvino cannot read") as err:
        open_session("openvino", broken)
    assert not isinstance(err.value, ProviderUnavailable)


@requires_openvino
def test_openvino_runs_on_the_cpu_only(model):
    with pytest.raises(OnnxEdgeError, match="the openvino engine runs on the CPU"):
        open_session("openvino", model, provider="cuda")


# -- running -------------------------------------------------------------------------------------


@requires_openvino
@pytest.mark.parametrize("batch", [1, 7])
def test_f32_matches_onnxruntime(model, batch):
    ov = open_session("openvino", model, threads=1)
    ort = open_session("onnxruntime", model, threads=1)
    x = _batch(batch, seed=batch)
    (got,) = ov.run(["prob"], {"input": x})
    (want,) = ort.run(["prob"], {"input": x})
    assert got.shape == want.shape == (batch, 1)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5)


@requires_openvino
def test_settings_are_read_back_from_the_compiled_model(model):
    session = open_session("openvino", model, threads=1)
    assert session.settings["inference_precision"] == "f32"
    assert session.settings["performance_hint"] == "LATENCY"
    assert session.settings["inference_num_threads"] == 1
    assert session.settings["num_streams"] == 1
    assert session.settings["cpu_pinning"] is False
    assert session.describe() == "openvino CPU f32 (LATENCY, 1 threads)"


@requires_openvino
def test_bf16_runs_in_bf16_and_is_reported_so(model):
    reason = loader.unavailable_reason(OpenVinoConfig(precision="bf16"))
    if reason:
        pytest.skip(reason)
    bf16 = open_session("openvino", model, precision="bf16", threads=1)
    f32 = open_session("openvino", model, threads=1)
    assert bf16.settings["inference_precision"] == "bf16"
    ops = bf16.runtime_ops()
    assert {o["runtimePrecision"] for o in ops if o.get("layerType") == "Convolution"} == {"bf16"}
    x = _batch(8)
    (a,) = bf16.run(["prob"], {"input": x})
    (b,) = f32.run(["prob"], {"input": x})
    assert not np.array_equal(a, b)  # really another arithmetic
    np.testing.assert_allclose(a, b, atol=1e-2)


@requires_openvino
def test_execution_graph_shows_the_fused_convolutions(model):
    ops = open_session("openvino", model, threads=1).runtime_ops()
    convs = [o for o in ops if o.get("layerType") == "Convolution"]
    assert len(convs) == 4
    for conv in convs:  # each Conv carries its ReLU
        assert "relu" in conv["originalLayersNames"].lower(), conv


@requires_openvino
def test_extra_outputs_expose_inner_tensors(model):
    session = open_session("openvino", model, extra_outputs=["linear"])
    assert [o.name for o in session.get_outputs()] == ["prob", "linear"]
    prob, logits = session.run(["prob", "linear"], {"input": _batch(3)})
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-6)
    with pytest.raises(OnnxEdgeError, match="has no tensor 'nope' to output"):
        open_session("openvino", model, extra_outputs=["nope"])


@requires_openvino
@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"input": np.zeros((1, 3, 64, 64), np.float64)}, "expected float32, got float64"),
        ({"image": np.zeros((1, 3, 64, 64), np.float32)}, r"expected inputs \['input'\]"),
        ({"input": np.zeros((3, 64, 64), np.float32)}, "expected rank 4"),
        ({"input": [[0.0]]}, "expected float32, got list"),
    ],
)
def test_feeds_are_checked_as_onnxruntime_checks_them(model, feeds, message):
    session = open_session("openvino", model)
    with pytest.raises(ValueError, match=message):
        session.run(None, feeds)
    with pytest.raises(ValueError, match="unknown output 'logits'"):
        session.run(["logits"], {"input": _batch(1)})


@requires_openvino
def test_one_session_serves_many_threads(model):
    session = open_session("openvino", model, threads=1)
    inputs = [_batch(b, seed=b) for b in (1, 2, 3, 5, 8, 13)]
    expected = [session.run(None, {"input": x})[0] for x in inputs]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = session.run(None, {"input": inputs[i]})[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(results[i], want)


@requires_openvino
def test_int8_qdq_runs_in_int8_and_agrees_with_onnxruntime(model, tmp_path):
    qdq = make_int8_qdq(model, tmp_path / "int8.onnx")
    ov = open_session("openvino", qdq, threads=1)
    ort = open_session("onnxruntime", qdq, threads=1)
    precisions = {
        o["runtimePrecision"] for o in ov.runtime_ops() if o["layerType"] == "Convolution"
    }
    assert precisions <= {"u8", "i8"}, precisions  # the convs really run in int8
    x = _batch(16)
    (got,) = ov.run(None, {"input": x})
    (want,) = ort.run(None, {"input": x})
    np.testing.assert_allclose(got, want, atol=2e-3)
