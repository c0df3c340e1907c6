"""The export side of onnxedge (`onnxedge.export`): PyTorch to a simplified, checked ONNX bundle.

The Python API, one function per command, each returning its result object::

    from onnxedge.export import export_bundle

    result = export_bundle(model, input_shape=(3, 224, 224), out="build/mine", labels=names)

| command | function | returns |
| --- | --- | --- |
| (Python only) | `export_bundle` (an ``nn.Module``) | `ExportResult` |
| ``onnxedge export`` | `export_model` (with `ExportRequest`) | `ExportResult` |
| ``onnxedge simplify`` | `simplify_file` | `LoweringResult` |
| ``onnxedge import`` | `import_bundle` (an ONNX file; onnx_ir, no torch) | `ImportResult` |
| ``onnxedge train`` | `train` (with `TrainConfig`) | `TrainResult` |

Its names are imported on first use, so the CLI's modules under this package load where the
export dependencies (torch, onnxscript, onnx_ir, onnxsim: ``pip install 'onnxedge[export]'``) are
not installed; a name whose dependencies are missing is a ``ModuleNotFoundError`` that says what
to install. The device side is `onnxedge.runtime`.
"""

from __future__ import annotations

from onnxedge.runtime.deps import EXPORT_EXTRA_HINT
from onnxedge.runtime.lazy_api import lazy_names

# name -> the module that defines it, or "module:attribute" where the name differs.
_API = {
    "ExportRequest": "onnxedge.export.pipeline",
    "ExportResult": "onnxedge.export.pipeline",
    "export_bundle": "onnxedge.export.pipeline",
    "export_model": "onnxedge.export.pipeline",
    "LoweringResult": "onnxedge.export.lowering",
    "import_bundle": "onnxedge.export.importer",
    "ImportResult": "onnxedge.export.importer",
    "simplify_file": "onnxedge.export.lowering",
    "TrainConfig": "onnxedge.models.train",
    "TrainResult": "onnxedge.models.train",
    "train": "onnxedge.models.train",
}

__all__ = sorted(_API)

__getattr__, __dir__ = lazy_names("onnxedge.export", _API, globals(), install=EXPORT_EXTRA_HINT)
