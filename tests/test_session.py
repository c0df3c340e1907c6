"""Sessions run on exactly the requested provider, or fail with one line that says why."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import onnxruntime as ort
import pytest

from onnxedge.runtime.engines.onnxruntime.session import (
    SessionConfig,
    make_session,
    provider_name,
    short_reason,
)
from onnxedge.runtime.errors import OnnxEdgeError, ProviderUnavailable


def test_cpu_session(smile_bundle):
    session = make_session(smile_bundle / "model.onnx", SessionConfig(provider="cpu", threads=1))
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_unknown_provider_names_the_known_ones():
    with pytest.raises(OnnxEdgeError, match=r"unknown execution provider 'npu'; expected one of"):
        provider_name("npu")


def test_cuda_that_cannot_load_is_an_error_with_onnxruntimes_reason(smile_bundle, capfd):
    try:
        make_session(smile_bundle / "model.onnx", SessionConfig(provider="cuda"))
    except ProviderUnavailable as e:
        message = str(e)
    else:
        pytest.skip("the CUDA EP loads here: this test is for machines without a usable GPU")
    assert "\n" not in message
    assert "requested CUDAExecutionProvider" in message
    assert "available: " in message and "CPUExecutionProvider" in message.split("available: ")[1]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        # Offered but not loadable: onnxruntime's own reason is in the message, not on stderr.
        assert "onnxruntime says: " in message
        assert ":onnxruntime:" not in capfd.readouterr().err


def test_a_model_that_cannot_load_is_not_a_missing_provider(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(OnnxEdgeError) as err:
        make_session(broken, SessionConfig(provider="cpu"))
    assert not isinstance(err.value, ProviderUnavailable)
    assert "onnxruntime cannot load the model on CPUExecutionProvider" in str(err.value)


def test_overlapping_captures_leave_stderr_working():
    """Two threads capturing fd 2 at once must not lose the real stderr (the lock serialises)."""
    code = textwrap.dedent(
        """
        import os, threading, time
        from onnxedge.runtime.engines.onnxruntime.session import captured_native_stderr

        def capture():
            with captured_native_stderr():
                os.write(2, b"[W:onnxruntime:x] captured\\n")
                time.sleep(0.2)

        threads = [threading.Thread(target=capture) for _ in range(2)]
        threads[0].start(); time.sleep(0.05); threads[1].start()
        for t in threads:
            t.join()
        os.write(2, b"VISIBLE\\n")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stderr.splitlines() == ["VISIBLE"]


def test_gpu_libraries_preloaded_once_quietly_and_never_fatally(smile_bundle, monkeypatch, capfd):
    """`onnxruntime.preload_dlls` (what `onnxedge[cuda]` relies on) is called before the first GPU
    session only; what it prints stays off stdout and its failure does not change the outcome."""
    from onnxedge.runtime.engines.onnxruntime import session

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build offers no CUDA EP (not onnxruntime-gpu)")
    calls = []

    def preload_dlls():
        calls.append(1)
        print("Please follow https://onnxruntime.ai/docs/install/ to install CUDA.")
        raise OSError("libcudart.so.13: cannot open shared object file")

    monkeypatch.setattr(session, "_preloaded", False)
    monkeypatch.setattr(ort, "preload_dlls", preload_dlls, raising=False)
    make_session(smile_bundle / "model.onnx", SessionConfig(provider="cpu"))
    assert calls == []  # the CPU EP needs no GPU library
    for _ in range(2):
        # No usable GPU here: the same outcome as without the preload.
        with contextlib.suppress(ProviderUnavailable):
            make_session(smile_bundle / "model.onnx", SessionConfig(provider="cuda"))
    assert calls == [1]
    out = capfd.readouterr().out
    assert "install CUDA" not in out and "libcudart" not in out


LONG_CUDA = (
    "requested CUDAExecutionProvider, but onnxruntime could not load it and fell back; available: "
    "CPUExecutionProvider (this build offers: TensorrtExecutionProvider, CUDAExecutionProvider, "
    "CPUExecutionProvider); onnxruntime says: Failed to load library libonnxruntime_providers_cuda"
    ".so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory;"
    " Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*."
)


@pytest.mark.parametrize(
    ("message", "short"),
    [
        (LONG_CUDA, "CUDA EP: libcublasLt.so.13 not found"),
        (
            LONG_CUDA.replace("CUDAExecutionProvider, but", "TensorrtExecutionProvider, but"),
            "TensorRT EP: libcublasLt.so.13 not found",
        ),
        (
            "requested CUDAExecutionProvider, available: CPUExecutionProvider",
            "CUDA EP: not in this onnxruntime build (available: CPUExecutionProvider)",
        ),
        (
            LONG_CUDA.split("; onnxruntime says")[0],
            "CUDA EP: onnxruntime could not load it and fell back to the CPU",
        ),
        (
            LONG_CUDA.split("says: ")[0] + "says: CUDA failure 100: no CUDA-capable device ; GPU=0",
            "CUDA EP: CUDA failure 100: no CUDA-capable device",
        ),
        (
            "torch.cuda.is_available() is False (torch 2.13.0+cpu)",
            "torch.cuda.is_available() is False (torch 2.13.0+cpu)",
        ),
        (
            "could not run at batch 8: out of memory. Tried to allocate 2 GiB.",
            "could not run at batch 8: out of memory.",
        ),
        ("x" * 300, "x" * 119 + "…"),
    ],
)
def test_short_reason_is_the_first_cause(message, short):
    assert short_reason(message) == short


def test_a_failing_gpu_provider_prints_nothing_on_stdout(smile_bundle, capfd):
    """onnxruntime's Python layer prints an "EP Error" banner when it falls back (TensorRT): the
    results on stdout must not carry it."""
    with contextlib.suppress(OnnxEdgeError):
        make_session(smile_bundle / "model.onnx", SessionConfig(provider="tensorrt"))
    assert "EP Error" not in capfd.readouterr().out
