"""The preprocessing in the graph: a variant whose input is the decoded image's uint8 pixels, NHWC
at the model's size, as OpenVINO's PrePostProcessor builds it.

`add_uint8_input` rewrites a model (``model.onnx`` or the int8 variant) with onnx_ir: the input
keeps its name and becomes ``uint8 [N, H, W, C]``, and the graph's first nodes do what
`onnxedge.runtime.classifier.preprocess.normalize` does on the host:

    Transpose(perm 0,3,1,2) -> Cast(float) -> Mul(scale) -> Sub(mean) -> Div(std) -> the model

The layout change runs on the uint8 bytes (a quarter of the float32 traffic), and the three
elementwise steps are the host's float32 operations in its order, so the model sees the numbers
the host would have made. The host then hands over the bytes `load_pixels` decoded; the channel
order (``channel_order`` BGR) stays a host step, as it is one of the decoded pixels. A resize mode
that pads (``pad_value`` comes after the normalisation, per image) is refused: its images are not
the same size before the padding.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.classifier.preprocess import pads
from onnxedge.runtime.deps import require_modules
from onnxedge.runtime.errors import OnnxEdgeError


def pixels_input_block(input_block: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``input`` block of the variant, from the model's: same name and batch dim,
    uint8, [N, H, W, C]."""
    batch, channels, height, width = input_block["shape"]
    return {
        "name": input_block["name"],
        "shape": [batch, height, width, channels],
        "dtype": "uint8",
        "layout": "NHWC",
    }


def add_uint8_input(source: Path, target: Path, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``source`` with the preprocessing ``spec`` (the manifest's) as its first nodes at
    ``target`` (module docstring); returns how it was made."""
    require_modules("onnx_ir", needed_by="onnxedge optimize --uint8-input")
    import onnx_ir as ir

    if pads(spec):
        raise OnnxEdgeError(
            f"--uint8-input: expected a preprocessing whose images all have the model's size, "
            f"found resize_mode {spec.get('resize_mode')!r}, which pads after the scaling"
        )
    model = ir.load(source)
    graph = model.graph
    if len(graph.inputs) != 1 or len(graph.inputs[0].shape or ()) != 4:
        raise OnnxEdgeError(f"{source}: expected one input of rank 4 (NCHW) to take pixels")
    old = graph.inputs[0]
    if old.dtype != ir.DataType.FLOAT:
        raise OnnxEdgeError(f"{source}: expected a float32 input, found {old.dtype}")
    batch, channels, height, width = old.shape
    name = old.name
    old.name = f"{name}_normalized"
    pixels = ir.Value(
        name=name,
        type=ir.TensorType(ir.DataType.UINT8),
        shape=ir.Shape([batch, height, width, channels]),
    )
    scale = float(spec.get("scale", 1.0 / 255.0))
    mean = np.asarray(spec.get("mean", [0.0] * channels), np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.get("std", [1.0] * channels), np.float32).reshape(1, -1, 1, 1)

    def constant(tag: str, array: np.ndarray) -> ir.Value:
        unique = f"pixels_{tag}"  # a name the model does not use (int8 has input_scale)
        while unique in graph.initializers:
            unique += "_"
        value = ir.Value(
            name=unique,
            type=ir.TensorType(ir.DataType.FLOAT),
            shape=ir.Shape(array.shape),
            const_value=ir.tensor(array, name=unique),
        )
        graph.register_initializer(value)
        return value

    nchw = ir.node("Transpose", [pixels], attributes={"perm": [0, 3, 1, 2]}, name="pixels_nchw")
    cast = ir.node(
        "Cast", nchw.outputs, attributes={"to": ir.DataType.FLOAT.value}, name="pixels_float"
    )
    mul = ir.node(
        "Mul",
        [cast.outputs[0], constant("scale", np.asarray(scale, np.float32))],
        name="pixels_scale",
    )
    sub = ir.node("Sub", [mul.outputs[0], constant("mean", mean)], name="pixels_mean")
    div = ir.node("Div", [sub.outputs[0], constant("std", std)], name="pixels_std")
    old.replace_all_uses_with(div.outputs[0])
    div.outputs[0].name = old.name
    graph.inputs.clear()
    graph.inputs.append(pixels)
    first = next(iter(graph))
    graph.insert_before(first, [nchw, cast, mul, sub, div])
    ir.save(model, target)
    _check(target)
    return {
        "method": "onnx_ir: Transpose(0,3,1,2), Cast(float), Mul(scale), Sub(mean), Div(std) "
        "before the model",
        "scale": scale,
        "mean": mean.reshape(-1).tolist(),
        "std": std.reshape(-1).tolist(),
    }


def _check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # onnx raises ValidationError, InferenceError, ...
        raise OnnxEdgeError(f"--uint8-input: the rewritten model fails onnx's check: {e}") from None


__all__ = ["add_uint8_input", "pixels_input_block"]
