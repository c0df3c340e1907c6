"""Small ONNX classifiers written with onnx.helper, as models exported elsewhere arrive: for the
tests of `onnxedge import` (tests/test_import.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _weights(seed: int, channels: int, features: int, classes: int) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(seed)
    return [
        _init("conv_w", rng.normal(0, 0.2, (features, channels, 3, 3)).astype(np.float32)),
        _init("conv_b", rng.normal(0, 0.1, features).astype(np.float32)),
        _init("fc_w", rng.normal(0, 0.5, (classes, features)).astype(np.float32)),
        _init("fc_b", rng.normal(0, 0.1, classes).astype(np.float32)),
    ]


def _model(nodes, inputs, outputs, initializers, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "classifier", inputs, outputs, initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _gap_fc(features: str, out: str) -> list[onnx.NodeProto]:
    """A GlobalAveragePool head: ``features`` pooled, flattened and through ``fc_w``/``fc_b``."""
    return [
        helper.make_node("GlobalAveragePool", [features], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], [out], name="fc", transB=1),
    ]


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def fixed_batch_reshape(classes: int = 4, side: int = 32, seed: int = 0) -> onnx.ModelProto:
    """Batch fixed at 1, a full-size AveragePool head and ``Reshape(x, [1, -1])`` before the
    classifier, as a Caffe2 or traced export writes it; K logits."""
    features = 8
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["p"], name="pool", kernel_shape=[side, side]),
        helper.make_node("Reshape", ["p", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    inits = [*_weights(seed, 3, features, classes), _init("flat_shape", np.array([1, -1]))]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        inits,
    )


def fixed_batch_dynamo_reshape(
    classes: int = 4, side: int = 16, seed: int = 7, rest: tuple[int, ...] = (-1,)
) -> onnx.ModelProto:
    """As torch's dynamo exporter writes a model exported at batch 1 (pytorchcv's MobileNetV3:
    ``x.view(x.size(0), -1)`` after a 1x1 convolution classifier): opset 18, a full-size
    AveragePool, and ``Reshape(x, [1, *rest], allowzero=1)``, 1 being the traced batch."""
    features = 6
    rng = np.random.default_rng(seed)
    head = rng.normal(0, 0.5, (classes, features, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["p"], name="pool", kernel_shape=[side, side]),
        helper.make_node("Conv", ["p", "head_w"], ["z"], name="classifier"),
        helper.make_node("Reshape", ["z", "view_shape"], ["logits"], name="view", allowzero=1),
    ]
    inits = [
        *_weights(seed, 3, features, classes)[:2],
        _init("head_w", head),
        _init("view_shape", np.array([1, *rest], dtype=np.int64)),
    ]
    output = [1, *rest] if 0 in rest else [1, classes]  # a literal 0 empties the tensor
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, output)],
        inits,
        opset=18,
    )


def channel_shuffles(
    shuffles: int = 12, classes: int = 3, side: int = 8, seed: int = 8
) -> onnx.ModelProto:
    """As torch's dynamo exporter writes ShuffleNet exported at batch 1: after each depthwise
    convolution a channel shuffle, ``Reshape([1, 2, 3, H, W]) -> Transpose -> Reshape([1, 6, H,
    W])`` (allowzero=1), each behind the previous one, then a GlobalAveragePool head."""
    features = 6
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["h0"], name="conv", pads=[1] * 4)]
    inits = [*_weights(seed, 3, features, classes)]
    inits.append(_init("split_shape", np.array([1, 2, 3, side, side], dtype=np.int64)))
    inits.append(_init("merge_shape", np.array([1, features, side, side], dtype=np.int64)))
    for i in range(shuffles):
        weight = rng.normal(0, 0.5, (features, 1, 3, 3)).astype(np.float32)
        inits.append(_init(f"dw{i}_w", weight))
        nodes += [
            helper.make_node(
                "Conv",
                [f"h{i}", f"dw{i}_w"],
                [f"d{i}"],
                name=f"dw{i}",
                group=features,
                pads=[1] * 4,
            ),
            helper.make_node("Relu", [f"d{i}"], [f"r{i}"], name=f"relu{i}"),
            helper.make_node(
                "Reshape", [f"r{i}", "split_shape"], [f"s{i}"], name=f"split{i}", allowzero=1
            ),
            helper.make_node(
                "Transpose", [f"s{i}"], [f"t{i}"], name=f"swap{i}", perm=[0, 2, 1, 3, 4]
            ),
            helper.make_node(
                "Reshape", [f"t{i}", "merge_shape"], [f"h{i + 1}"], name=f"merge{i}", allowzero=1
            ),
        ]
    nodes += [
        *_gap_fc(f"h{shuffles}", "logits"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        inits,
        opset=18,
    )


def softmax_dynamic_width(classes: int = 3, height: int = 48, seed: int = 1) -> onnx.ModelProto:
    """A text-line classifier: input ``[N, 3, 48, W]`` (W symbolic), a ReduceMean head, K softmax
    probabilities, as an OCR package ships its direction classifier."""
    features = 6
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["m"], name="mean", axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["m", "fc_w", "fc_b"], ["z"], name="fc", transB=1),
        helper.make_node("Softmax", ["z"], ["prob"], name="softmax", axis=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, height, "W"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", classes])],
        _weights(seed, 3, features, classes),
    )


def grayscale_sigmoid(side: int = 28, seed: int = 2) -> onnx.ModelProto:
    """One input channel (grayscale), a GlobalAveragePool head, one sigmoid probability."""
    features = 5
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        *_gap_fc("r", "z"),
        helper.make_node("Sigmoid", ["z"], ["prob"], name="sigmoid"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1])],
        _weights(seed, 1, features, 1),
    )


def conv_classifier_nk11(
    classes: int = 5, side: int = 16, seed: int = 5, opset: int = OPSET
) -> onnx.ModelProto:
    """Batch fixed at 1, a 1x1 convolution as the classifier after the pool and a Softmax over
    the channels: the output is [1, K, 1, 1], as SqueezeNet's. Below opset 13 the Softmax has
    no ``axis``, as Caffe2's converter wrote it (1 by default there: the [1, K] the input is
    coerced to)."""
    features = 6
    rng = np.random.default_rng(seed)
    head = rng.normal(0, 0.5, (classes, features, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Conv", ["g", "head_w"], ["z"], name="classifier"),
        helper.make_node("Softmax", ["z"], ["prob"], name="softmax", axis=1)
        if opset >= 13
        else helper.make_node("Softmax", ["z"], ["prob"], name="softmax"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, classes, 1, 1])],
        [*_weights(seed, 3, features, classes)[:2], _init("head_w", head)],
        opset=opset,
    )


def classifier_before_pool(classes: int = 3, side: int = 24, seed: int = 11) -> onnx.ModelProto:
    """SqueezeNet's head: a 1x1 convolution to K channels and a ReLU before the pool, nothing
    linear after it (pool, Flatten: K logits), dynamic batch."""
    features = 8
    rng = np.random.default_rng(seed)
    head = rng.normal(0, 0.5, (classes, features, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "head_w"], ["z"], name="classifier"),
        helper.make_node("Relu", ["z"], ["zr"], name="classifier_relu"),
        helper.make_node("GlobalAveragePool", ["zr"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["logits"], name="flatten", axis=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [*_weights(seed, 3, features, classes)[:2], _init("head_w", head)],
    )


def paddle_style(classes: int = 2, seed: int = 6) -> onnx.ModelProto:
    """As PaddlePaddle's converter writes a classifier (RapidOCR's text-direction model): opset 11,
    dim 0 written as the number -1, H and W as the name "?", a one-output BatchNormalization with
    its ``momentum``, and softmax probabilities."""
    features = 6
    rng = np.random.default_rng(seed)
    bn = {
        "bn_scale": rng.uniform(0.5, 1.5, features),
        "bn_bias": rng.normal(0, 0.2, features),
        "bn_mean": rng.normal(0, 0.3, features),
        "bn_var": rng.uniform(0.2, 2.0, features),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node(
            "BatchNormalization", ["c", *bn], ["n"], name="bn", epsilon=1e-5, momentum=0.9
        ),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        *_gap_fc("r", "z"),
        helper.make_node("Softmax", ["z"], ["prob"], name="softmax", axis=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [-1, classes])],
        [
            *_weights(seed, 3, features, classes),
            *(_init(k, v.astype(np.float32)) for k, v in bn.items()),
        ],
        opset=11,
    )


def channels_last(head: str = "nchw", side: int = 20, seed: int = 7) -> onnx.ModelProto:
    """As tf2onnx converts a Keras classifier: input ``[N, H, W, 3]`` (NHWC), a Transpose to NCHW
    before the convolution, softmax probabilities from ``MatMul`` and ``Add`` (a Dense layer). The
    head: ``nchw``, a ReduceMean over axes 2 and 3 (its transposes optimized away); ``nhwc``, a
    Transpose back to NHWC and a ReduceMean over axes 1 and 2 (GlobalAveragePooling2D as
    written)."""
    features, classes = 5, 3
    conv_w, conv_b, fc_w, fc_b = _weights(seed, 3, features, classes)
    fc_w = _init("fc_w", numpy_helper.to_array(fc_w).T.copy())  # [features, classes]: MatMul's
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
    ]
    if head == "nchw":
        nodes.append(
            helper.make_node("ReduceMean", ["r"], ["m"], name="gap", axes=[2, 3], keepdims=0)
        )
    else:
        nodes += [
            helper.make_node("Transpose", ["r"], ["rt"], name="to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("ReduceMean", ["rt"], ["m"], name="gap", axes=[1, 2], keepdims=0),
        ]
    nodes += [
        helper.make_node("MatMul", ["m", "fc_w"], ["mm"], name="dense"),
        helper.make_node("Add", ["mm", "fc_b"], ["z"], name="dense_bias"),
        helper.make_node("Softmax", ["z"], ["prob"], name="softmax", axis=-1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["unk__0", side, side, 3])],
        # tf2onnx names each dynamic dim anew: the output's batch is not the input's name
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["unk__1", classes])],
        [conv_w, conv_b, fc_w, fc_b],
    )


def logits_and_probabilities(classes: int = 3, side: int = 16, seed: int = 8) -> onnx.ModelProto:
    """A classifier with two outputs, its logits and their softmax, as some exporters write one
    (and a ReduceMax of the features beside them, which only the logits' consumers need not)."""
    features = 4
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        *_gap_fc("r", "logits"),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
        helper.make_node("ReduceMax", ["r"], ["peak"], name="peak", axes=[2, 3], keepdims=0),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, side, side])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info("peak", TensorProto.FLOAT, ["N", features]),
        ],
        _weights(seed, 3, features, classes),
    )


def batch_mixing(side: int = 16) -> onnx.ModelProto:
    """Batch fixed at 1 and a ReduceMean over dim 0 (the batch) that no rewrite can undo."""
    features, classes = 4, 2
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("ReduceMean", ["c"], ["b"], name="batch_mean", axes=[0], keepdims=1),
        *_gap_fc("b", "logits"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        _weights(3, 3, features, classes),
    )


def two_inputs() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3, 8, 8]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3, 8, 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [],
    )


def token_input() -> onnx.ModelProto:
    """A text model: int64 token ids [N, T]."""
    nodes = [helper.make_node("Cast", ["ids"], ["y"], name="cast", to=TensorProto.FLOAT)]
    return _model(
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        [],
    )


def segmenter(side: int = 16) -> onnx.ModelProto:
    """A per-pixel output [N, K, H, W]: not a classifier."""
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["y"], name="conv", pads=[1] * 4)]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, side, side])],
        _weights(4, 3, 5, 2)[:2],
    )


def detector(side: int = 16) -> onnx.ModelProto:
    """Two outputs (boxes and scores), as a detector has."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["boxes"], name="boxes"),
        helper.make_node("Flatten", ["g"], ["scores"], name="scores"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, side, side])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3]),
        ],
        [],
    )


def unknown_op() -> onnx.ModelProto:
    """An op of a custom domain that ONNX Runtime has no kernel for."""
    nodes = [helper.make_node("Mystery", ["x"], ["y"], name="mystery", domain="com.example")]
    graph = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example", 1)],
    )
    model.ir_version = 8
    return model


def upsampled_branch(
    op: str = "Resize", opset: int = OPSET, by: str = "scales", side: int = 16, seed: int = 12
) -> onnx.ModelProto:
    """Batch fixed at 1, a branch pooled to half size and upsampled back (``op`` by constant
    ``scales`` [1, 1, 2, 2], or by constant ``sizes`` that fix the batch too) and added to the
    features, as HRNet, residual attention and octave convolutions do; then ``Reshape(x,
    [1, -1])`` before the classifier. ONNX's shape inference loses a symbolic batch at the
    upsampling, so the reshape behind it did not show the batch."""
    features, classes = 8, 3
    scales = _init("scales", np.array([1, 1, 2, 2], np.float32))
    if op == "Upsample" or opset < 11:  # Upsample-9 and Resize-10: (X, scales)
        up_inputs, extra = ["half", "scales"], [scales]
    elif by == "scales":  # Resize from opset 11: (X, roi, scales, sizes)
        up_inputs, extra = ["half", "", "scales"], [scales]
    else:
        sizes = np.array([1, features, side, side], np.int64)
        up_inputs, extra = ["half", "", "", "sizes"], [_init("sizes", sizes)]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node(
            "AveragePool", ["r"], ["half"], name="down", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node(op, up_inputs, ["up"], name="up", mode="nearest"),
        helper.make_node("Add", ["r", "up"], ["sum"], name="merge"),
        helper.make_node("AveragePool", ["sum"], ["p"], name="pool", kernel_shape=[side, side]),
        helper.make_node("Reshape", ["p", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    inits = [*_weights(seed, 3, features, classes), _init("flat_shape", np.array([1, -1])), *extra]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        inits,
        opset=opset,
    )


def padded_shortcut(
    batch: int = 1, axis: int = 1, rows: str = "zeros", side: int = 8, seed: int = 13
) -> onnx.ModelProto:
    """Batch fixed at ``batch``, the features concatenated along ``axis`` with a constant of
    the same shape (``torch.cat((x, torch.zeros_like(x)), dim=1)`` traced: 1-bit WRN's
    shortcut; ``rows`` "zeros", or "different": each row of the constant its own), then the
    pool, ``Reshape(x, [batch, -1])`` and the classifier. Along axis 0 the rows are averaged
    back to ``batch`` after the Concat."""
    features, classes = 4, 3
    rng = np.random.default_rng(seed)
    shape = (batch, features, side, side)
    constant = np.zeros(shape, np.float32)
    if rows == "different":
        constant += np.arange(batch, dtype=np.float32).reshape(-1, 1, 1, 1)
    width = 2 * features if axis == 1 else features
    mix = helper.make_node("ReduceMean", ["joined"], ["mixed"], name="mix", axes=[0])
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Concat", ["r", "pad"], ["joined"], name="join", axis=axis),
        mix if axis == 0 else helper.make_node("Identity", ["joined"], ["mixed"], name="same"),
        helper.make_node("AveragePool", ["mixed"], ["p"], name="pool", kernel_shape=[side] * 2),
        helper.make_node("Reshape", ["p", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wide_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    inits = [
        *_weights(seed, 3, features, classes)[:2],
        _init("fc_b", rng.normal(0, 0.1, classes).astype(np.float32)),
        _init("wide_w", rng.normal(0, 0.5, (classes, width)).astype(np.float32)),
        _init("pad", constant),
        _init("flat_shape", np.array([batch, -1])),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        inits,
    )


def stacked_columns(side: int = 8, seed: int = 14) -> onnx.ModelProto:
    """Batch fixed at 1, two columns stacked along a new dim 0 and averaged over it
    (``torch.stack(columns).mean(0)``: FractalNet's join), which moves the batch to dim 1 and
    back; then the pool, ``Reshape(x, [1, -1])`` and the classifier."""
    features, classes = 4, 3
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Unsqueeze", ["c", "axis0"], ["col1"], name="stack1"),
        helper.make_node("Unsqueeze", ["r", "axis0"], ["col2"], name="stack2"),
        helper.make_node("Concat", ["col1", "col2"], ["cols"], name="columns", axis=0),
        helper.make_node("ReduceMean", ["cols"], ["joined"], name="join", axes=[0], keepdims=0),
        helper.make_node("AveragePool", ["joined"], ["p"], name="pool", kernel_shape=[side] * 2),
        helper.make_node("Reshape", ["p", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    inits = [
        *_weights(seed, 3, features, classes),
        _init("axis0", np.array([0])),
        _init("flat_shape", np.array([1, -1])),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        inits,
    )


def squeeze_excitation(width: int = 4, side: int = 8, seed: int = 15) -> onnx.ModelProto:
    """Batch fixed at 1, a squeeze-excitation gate as jax2onnx writes it at a fixed batch: the
    mean ``[1, 4, 1, 1]`` flattened by ``Reshape(s, [-1, width])``, a Dense and a Sigmoid, then
    ``Reshape(gate, [1, 4, 1, 1])`` back (the traced batch) and the product; then the pool and the
    classifier. With ``width`` 4 the -1 is the batch; with 2 it is twice the batch."""
    features, classes = 4, 3
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["s"], name="squeeze", axes=[2, 3]),
        helper.make_node("Reshape", ["s", "flat_shape"], ["sf"], name="se_flatten"),
        helper.make_node("MatMul", ["sf", "se_w"], ["sm"], name="se_dense"),
        helper.make_node("Sigmoid", ["sm"], ["gate"], name="se_gate"),
        helper.make_node("Reshape", ["gate", "gate_shape"], ["gr"], name="se_back"),
        helper.make_node("Mul", ["r", "gr"], ["e"], name="excite"),
        *_gap_fc("e", "logits"),
    ]
    inits = [
        *_weights(seed, 3, features, classes),
        _init("se_w", rng.normal(0, 0.5, (width, width)).astype(np.float32)),
        _init("flat_shape", np.array([-1, width])),
        _init("gate_shape", np.array([1, features, 1, 1])),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        inits,
    )
