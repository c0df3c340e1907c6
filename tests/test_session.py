"""Sessions run on exactly the requested provider, or fail with one line that says why."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.session import SessionConfig, make_session, provider_name


def test_cpu_session(smile_bundle):
    session = make_session(smile_bundle / "model.onnx", SessionConfig(provider="cpu", threads=1))
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_unknown_provider_names_the_known_ones():
    with pytest.raises(OnnxEdgeError, match=r"unknown execution provider 'npu'; expected one of"):
        provider_name("npu")


def test_cuda_that_cannot_load_is_an_error_with_onnxruntimes_reason(smile_bundle, capfd):
    try:
        make_session(smile_bundle / "model.onnx", SessionConfig(provider="cuda"))
    except OnnxEdgeError as e:
        message = str(e)
    else:
        pytest.skip("the CUDA EP loads here: this test is for machines without a usable GPU")
    assert "\n" not in message
    assert "requested CUDAExecutionProvider" in message
    assert "available: CPUExecutionProvider" in message
    if "CUDAExecutionProvider" in ort.get_available_providers():
        # Offered but not loadable: onnxruntime's own reason is in the message, not on stderr.
        assert "onnxruntime says: " in message
        assert ":onnxruntime:" not in capfd.readouterr().err
