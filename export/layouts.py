"""The input layouts `onnxedge import` takes (``--input-layout``), in a module of their own that
imports nothing, so that the command's options load where the export dependencies (onnx_ir,
onnxscript) are not installed; `onnxedge.export.interface` makes the edits."""

from __future__ import annotations

NCHW, NHWC = "NCHW", "NHWC"
LAYOUTS = ("auto", NCHW, NHWC)
TO_NHWC = (0, 2, 3, 1)  # the Transpose from the bundle's NCHW to the original's NHWC

__all__ = ["LAYOUTS", "NCHW", "NHWC", "TO_NHWC"]
