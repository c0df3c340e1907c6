"""fp16: float16 weights and compute for GPUs (the CUDA EP), with float32 inputs and outputs so
callers do not change.

`convert_fp16` uses onnxruntime's converter (``onnxruntime.transformers.float16``):

1. ``keep_io_types``: the graph takes and returns float32, with a Cast after the input and one
   before the output;
2. kept in float32: the ops onnxruntime's converter blocks by default (those without float16
   kernels), and the head, the classifier and the Sigmoid after it (as the int8 variant keeps
   them): a float16 sigmoid resolves probabilities near 1 only to steps of 2^-11, and the head
   is a negligible share of the work;
3. tidied with onnxruntime's post-processing for mixed precision: a Cast to float16 followed by
   one back to float32 between two kept nodes is removed (the value stays float32), stale type
   annotations are dropped (the checker infers them again), and the nodes are put back in
   topological order. Nothing here needs symbolic shape inference, which lives in
   ``onnxruntime.tools`` and so imports torch wherever torch is installed.

Not for the CPU EP: onnxruntime's CPU EP has no float16 kernels for these convolutions on x86 and
runs them in float32 between inserted Casts, so the variant is correct there but slower than
fp32 (docs/BENCHMARKS.md). It is gated on the CPU, against fp32's numbers, where there is no
CUDA EP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from onnxedge.runtime.errors import OnnxEdgeError, first_line
from onnxedge.runtime.variants.graph import head_node_names, name_unnamed_nodes, package_versions


def convert_fp16(source: Path, target: Path) -> dict[str, Any]:
    """Write ``source`` converted to float16 at ``target``; returns how it was made."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(source))
    name_unnamed_nodes(model)
    head = head_node_names(model)  # 2.
    try:
        converted = convert_float_to_float16(
            model,
            keep_io_types=True,  # 1.
            op_block_list=list(DEFAULT_OP_BLOCK_LIST),
            node_block_list=head,
        )
        # 3. The converter casts to float16 and back again between the float32 nodes it keeps
        # (a rounding for nothing), leaves type annotations of the old types, and appends the
        # Casts it adds at the end of the node list.
        tidy = OnnxModel(converted)
        tidy.remove_cascaded_cast_nodes()
        del converted.graph.value_info[:]
        tidy.topological_sort()
    except Exception as e:
        raise OnnxEdgeError(f"the float16 conversion failed: {first_line(e)}") from None
    try:
        onnx.checker.check_model(converted, full_check=True)
    except Exception as e:
        raise OnnxEdgeError(f"the float16 model fails onnx.checker: {first_line(e)}") from None
    target.write_bytes(converted.SerializeToString(deterministic=True))
    return {
        "method": "onnxruntime.transformers.float16.convert_float_to_float16",
        "keep_io_types": True,
        "kept_float32": {"ops": "onnxruntime's DEFAULT_OP_BLOCK_LIST", "nodes": head},
        "versions": package_versions(),
    }


__all__ = ["convert_fp16"]
