"""The ORT format: a model as onnxruntime's minimal (reduced) builds load it, with the list of the
operators such a build must include.

`convert_to_ort` does what onnxruntime's ``convert_onnx_models_to_ort`` tool does with its
default ("Fixed") optimisation style, without importing the tool (``onnxruntime.tools`` imports
torch wherever torch is installed, and the runtime never imports torch):

1. an onnxruntime session at ``ORT_ENABLE_ALL`` on the CPU EP saves the optimised graph as
   ``.ort`` (``session.save_model_format = ORT``);
2. with the NCHWc layout transform disabled, as the tool does unless told the target is amd64:
   its blocked layout is x86-specific, and an edge device may be an Arm board;
3. with ``session.qdqisint8allowed = 0``, as the tool does for non-Arm targets;
4. the operators the optimised graph uses (the same session settings, saved as ONNX and read)
   become the required-operators configuration, in the tool's format
   (`onnxedge.runtime.variants.graph.operators_config`); a minimal build takes it with
   ``--include_ops_by_config``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import onnx

from onnxedge.runtime.errors import OnnxEdgeError, first_line
from onnxedge.runtime.variants.graph import operators, package_versions

OPTIMIZATION = "ORT_ENABLE_ALL"
DISABLED_OPTIMIZERS = ("NchwcTransformer",)  # 2.
CONFIG_ENTRIES = {"session.qdqisint8allowed": "0"}  # 3.


def convert_to_ort(source: Path, target: Path) -> dict[str, Any]:
    """Write ``source`` (an ONNX file) in the ORT format at ``target``; returns how it was made,
    with ``operators`` (`onnxedge.runtime.variants.graph.operators`) for the configuration."""
    with tempfile.TemporaryDirectory(prefix="onnxedge-ort-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        _save(source, target, ort_format=True)  # 1.
        _save(source, optimized, ort_format=False)  # 4.
        used = operators(onnx.load(str(optimized)))
    return {
        "method": "onnxruntime session save (session.save_model_format=ORT), as "
        "onnxruntime.tools.convert_onnx_models_to_ort with optimization style Fixed",
        "optimization_level": OPTIMIZATION,
        "disabled_optimizers": list(DISABLED_OPTIMIZERS),
        "session_config": dict(CONFIG_ENTRIES),
        "operators": used,
        "versions": package_versions(),
    }


def _save(source: Path, target: Path, *, ort_format: bool) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(target)
    for key, value in CONFIG_ENTRIES.items():
        options.add_session_config_entry(key, value)
    if ort_format:
        options.add_session_config_entry("session.save_model_format", "ORT")
    try:
        ort.InferenceSession(
            str(source),
            sess_options=options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(DISABLED_OPTIMIZERS),
        )
    except Exception as e:  # onnxruntime's own error types
        raise OnnxEdgeError(
            f"onnxruntime cannot convert {source.name} to the ORT format: {first_line(e)}"
        ) from None
    if not target.is_file():
        raise OnnxEdgeError(f"onnxruntime wrote no {target.name} for {source.name}")


__all__ = ["CONFIG_ENTRIES", "DISABLED_OPTIMIZERS", "OPTIMIZATION", "convert_to_ort"]
