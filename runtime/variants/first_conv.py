"""int8 and the first convolution: a model's first Conv reads the image's 3 channels, and
onnxruntime's int8 convolution kernels (MLAS, u8 x s8 with VNNI) want input channels in multiples
of 4, so in the int8 variant that conv runs slower than it does in fp32 (profiles:
docs/BENCHMARKS.md). Two candidates, each made as a variant by `onnxedge optimize
--int8-first-conv` and gated as int8 is:

- ``int8-conv1-fp32``: int8 with the first convolution left in float, and the activation and
  pooling that follow it up to the next convolution (`first_conv_block`, the quantiser's
  ``nodes_to_exclude``): with the conv alone in float, the quantiser puts a QuantizeLinear
  before the first MaxPool, which onnxruntime then runs as a slow NCHW uint8 MaxPool
  (docs/BENCHMARKS.md); with the block in float it runs in fp32's blocked layout;
- ``int8-pad4``: the float model's input padded with zero channels up to a multiple of 4 inside
  the graph, and that conv's weights with zero input channels (`PadFirstConvChannels`), then
  quantised: the same numbers (a zero channel times zero weights adds nothing), the int8 conv on
  4 channels. The model's input stays the manifest's [N, 3, H, W].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxedge.runtime.errors import OnnxEdgeError

CHANNEL_MULTIPLE = 4


# What may follow the first conv inside its block: elementwise activations and pooling.
BLOCK_OPS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "MaxPool", "AveragePool")


def first_conv_block(model) -> list[str]:
    """The names of the Conv that reads the model's (ONNX proto's) first input directly and of
    the nodes after it, each the only consumer of the one before and in `BLOCK_OPS`."""
    graph = model.graph
    x = graph.input[0].name
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    conv = next(
        (n for n in graph.node if n.op_type == "Conv" and n.input and n.input[0] == x), None
    )
    if conv is None:
        raise OnnxEdgeError(f"expected a Conv reading the model's input {x!r}; found none")
    block = [conv]
    while len(block[-1].output) == 1 and len(after := consumers.get(block[-1].output[0], [])) == 1:
        if after[0].op_type not in BLOCK_OPS:
            break
        block.append(after[0])
    if not all(n.name for n in block):
        raise OnnxEdgeError("expected named nodes (name_unnamed_nodes first)")
    return [n.name for n in block]


def _pass_base():
    import onnx_ir as ir

    return ir.passes.InPlacePass


class PadFirstConvChannels(_pass_base()):  # type: ignore[misc]
    """Pad the input of the first convolution to a multiple of ``multiple`` channels.

    1. The graph's first input feeds a Conv (``group`` 1) whose weight is a constant of ``C``
       input channels, ``C`` not a multiple: a ``Pad`` adds zero channels to the input (constant
       mode, value 0, channel axis only) and the weight gets as many zero input channels.
    2. ``C`` already a multiple: nothing changes (``modified`` False).
    3. No such Conv, a grouped one, or a weight that is not a constant: `OnnxEdgeError` saying
       which.
    """

    def __init__(self, multiple: int = CHANNEL_MULTIPLE) -> None:
        super().__init__()
        self.multiple = multiple

    def call(self, model):
        import onnx_ir as ir

        graph = model.graph
        x = graph.inputs[0]
        convs = [n for n, i in x.uses() if n.op_type == "Conv" and i == 0]
        if not convs:  # 3.
            raise OnnxEdgeError(f"expected a Conv reading the model's input {x.name!r}; found none")
        conv = convs[0]
        group = conv.attributes.get("group")
        if group is not None and group.as_int() != 1:  # 3.
            raise OnnxEdgeError(f"the first Conv {conv.name!r} is grouped; padding needs group 1")
        weight = conv.inputs[1]
        if weight is None or weight.const_value is None:  # 3.
            raise OnnxEdgeError(f"the first Conv {conv.name!r} has no constant weight")
        w = weight.const_value.numpy()
        missing = (-w.shape[1]) % self.multiple
        if missing == 0:  # 2.
            return ir.passes.PassResult(model, modified=False)
        # 1.
        padded = np.concatenate([w, np.zeros((w.shape[0], missing, *w.shape[2:]), w.dtype)], 1)
        weight.const_value = ir.tensor(padded, name=weight.name)
        weight.shape = ir.Shape(padded.shape)
        rank = len(w.shape)
        pads = np.zeros(2 * rank, np.int64)
        pads[rank + 1] = missing  # the end of the channel axis
        pads_value = ir.Value(name=f"{conv.name}_input_pads", const_value=ir.tensor(pads))
        graph.register_initializer(pads_value)
        pad = ir.node(
            "Pad", [x, pads_value], attributes={"mode": "constant"}, name=f"{conv.name}_pad_input"
        )
        pad.outputs[0].name = f"{x.name}_padded"
        graph.insert_before(conv, pad)
        conv.replace_input_with(0, pad.outputs[0])
        return ir.passes.PassResult(model, modified=True)


def pad_first_conv(source: Path, target: Path, multiple: int = CHANNEL_MULTIPLE) -> int:
    """Write ``source`` with its first conv's input padded (`PadFirstConvChannels`) to
    ``target``; returns the channels it now reads."""
    import onnx_ir as ir

    model = ir.load(str(source))
    PadFirstConvChannels(multiple)(model)
    ir.save(model, str(target))
    conv = next(n for n in model.graph if n.op_type == "Conv")
    return int(conv.inputs[1].shape[1])


__all__ = [
    "BLOCK_OPS",
    "CHANNEL_MULTIPLE",
    "PadFirstConvChannels",
    "first_conv_block",
    "pad_first_conv",
]
