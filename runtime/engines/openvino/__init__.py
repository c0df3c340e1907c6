"""The OpenVINO engine (the optional ``onnxedge[openvino]`` extra): `loader` compiles a model
with explicit settings, `runner` runs it behind the `Session` protocol. Importing this package
does not import openvino; compiling does."""

from __future__ import annotations

from onnxedge.runtime.engines.openvino.loader import (
    DEFAULT_PRECISION,
    OPENVINO_EXTRA_HINT,
    PRECISIONS,
    Compiled,
    OpenVinoConfig,
    compile_model,
    import_openvino,
    openvino_version,
    unavailable_reason,
)
from onnxedge.runtime.engines.openvino.runner import OpenVinoSession


def open_openvino(model, config: OpenVinoConfig | None = None, *, extra_outputs=()):
    """`compile_model` and its `OpenVinoSession` in one call."""
    return OpenVinoSession(compile_model(model, config, extra_outputs=extra_outputs))


__all__ = [
    "DEFAULT_PRECISION",
    "OPENVINO_EXTRA_HINT",
    "PRECISIONS",
    "Compiled",
    "OpenVinoConfig",
    "OpenVinoSession",
    "compile_model",
    "import_openvino",
    "open_openvino",
    "openvino_version",
    "unavailable_reason",
]
