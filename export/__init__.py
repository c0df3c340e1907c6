"""The export side of onnxedge (`onnxedge.export`): PyTorch to a simplified, checked ONNX bundle.

The Python API::

    from onnxedge.export import export_bundle

    result = export_bundle(model, input_shape=(3, 224, 224), out="build/mine", labels=names)

Its names are imported on first use, so the CLI's modules under this package load where the
export dependencies (torch, onnxscript, onnxsim) are not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ExportRequest", "ExportResult", "export_bundle", "export_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("onnxedge.export.pipeline"), name)
    raise AttributeError(f"module 'onnxedge.export' has no attribute {name!r}")
