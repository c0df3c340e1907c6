"""int8: onnxruntime's static quantisation, in the QDQ format, for CPUs with int8 dot products
(AVX-512 VNNI, AVX-VNNI, Arm dot-product).

`quantize_int8` runs, in order:

1. ``quant_pre_process`` (onnxruntime's quantisation pre-processing: the graph optimisations
   that quantisation expects and ONNX shape inference, which knows every op of these CNNs; its
   symbolic shape inference is skipped: it lives in ``onnxruntime.tools``, which imports torch
   wherever torch is installed, and needs sympy, which the runtime does not install);
2. ``quantize_static`` in the QDQ format: weights int8 per output channel, activations uint8 (the
   fast pairing on x86: u8 x s8), calibrated on preprocessed images from the data set's train
   split with ``minmax``, ``entropy`` or ``percentile``;
3. the head kept in float: the classifier (the Gemm or MatMul nearest the output) and what
   follows it (the Sigmoid) are excluded from quantisation. Quantising them maps every output of
   a model with a narrow output range onto a handful of 8-bit steps (on untrained weights, all
   128 test probabilities became one value); keeping them float costs no measurable time;
4. the result checked: ``onnx.checker``, a symbolic batch dim, and `onnxedge check`'s head check,
   which looks through the Q/DQ pairs to the ``GlobalAveragePool``;
5. the weights of the convolutions that read the image (`image_conv_weights`) quantised to 7 bits
   (``reduce_range`` for those tensors alone: int8 in [-64, 64]; ``weights_7_bit`` "all": every
   weight, "none": none; the manifest's ``weights_7_bit`` lists them, or says "all", or "none" where
   a convolution that reads the image is left in 8 bits, [] where none is quantised): on an x86 CPU
   without VNNI, onnxruntime's int8 kernels add u8 x s8 products in pairs into 16 bits (AVX2's
   VPMADDUBSW), which saturates where two bright pixels meet two large weights of one sign (255 x
   127 x 2 > 32767); with |w| <= 64 a pair stays within 255 x 128 = 32640. Measured on an AMD EPYC
   Zen 2 (AVX2, no VNNI) with the trained smile model, 600 test faces: with 8-bit weights, 21 labels
   of 600 differed from fp32 (|dp| up to 0.996) while the same file's float reference (onnxruntime
   with its graph optimisations off, the Q/DQ pairs run in float) differed in none; with the first
   conv's weights in 7 bits, the kernels gave the float reference's numbers (|dp| <= 3e-4) and 1
   label of 600 differed, at the same speed. Deeper convolutions keep 8 bits: in models whose deeper
   convolutions read dense activations (MobileNetV2's linear bottlenecks) they saturate too, and 7
   bits everywhere would trade precision on every CPU for them (measured on pytorchcv models:
   docs/VARIANTS.md);
6. a model of an opset below 13 (PaddlePaddle's converter writes 11), whose DequantizeLinear has no
   ``axis`` for per-channel weights, converted to opset 13 by onnx's version converter first,
   checked to compute the same under ONNX Runtime on calibration images, and the manifest says so
   (``opset_upgraded_from``); RapidOCR's text-direction classifier failed `onnxedge check` without.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxedge.runtime.check.check import default_opset
from onnxedge.runtime.compare import compare_arrays
from onnxedge.runtime.errors import OnnxEdgeError, first_line
from onnxedge.runtime.variants.graph import (
    head_node_names,
    image_conv_weights,
    name_unnamed_nodes,
    package_versions,
)

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# DequantizeLinear takes an axis (per-channel weights) from this opset on; an older model is
# converted to it first (6.).
PER_CHANNEL_OPSET = 13
DEFAULT_CALIBRATION_SIZE = 256
CALIBRATION_BATCH = 16
# The entropy calibrator's histogram. onnxruntime's defaults (128 bins for 128 quantised bins)
# leave it one candidate threshold, the whole range, so `quantize_static`'s entropy gave
# minmax's ranges exactly (on the trained smile model, every scale); with 2048 bins, as
# TensorRT's entropy calibration has, it can clip. `quantize_static` does not pass bins on, so
# the ranges are computed here and handed to it as a calibration cache.
ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128
# 5.: the weights quantised to 7 bits: those of the convolutions that read the image (the
# default), every weight (onnxruntime's reduce_range), or none.
WEIGHTS_7_BIT = ("image", "all", "none")


@dataclasses.dataclass(frozen=True)
class Int8Config:
    calibration_method: str = "minmax"
    per_channel: bool = True
    activation_type: str = "uint8"
    weight_type: str = "int8"
    keep_head_float: bool = True  # 3. of the module docstring
    # The first convolution (3 input channels) and its activation and pooling left in float too
    # (`first_conv`).
    keep_first_conv_float: bool = False
    # 5. of the module docstring: which weights get 7 bits, one of `WEIGHTS_7_BIT`.
    weights_7_bit: str = "image"

    def __post_init__(self) -> None:
        if self.calibration_method not in CALIBRATION_METHODS:
            raise OnnxEdgeError(
                f"--calibration-method: expected one of {', '.join(CALIBRATION_METHODS)}, got "
                f"{self.calibration_method!r}"
            )
        if self.weights_7_bit not in WEIGHTS_7_BIT:
            raise OnnxEdgeError(
                f"--int8-7-bit-weights: expected one of {', '.join(WEIGHTS_7_BIT)}, got "
                f"{self.weights_7_bit!r}"
            )
        for name in ("activation_type", "weight_type"):
            if getattr(self, name) not in ("uint8", "int8"):
                raise OnnxEdgeError(f"{name}: expected uint8 or int8, got {getattr(self, name)!r}")


def quantize_int8(
    source: Path, target: Path, calibration: np.ndarray, config: Int8Config | None = None
) -> dict[str, Any]:
    """Write ``source`` quantised to int8 at ``target``, calibrated on ``calibration`` (float32
    [N, C, H, W], preprocessed as the manifest says); returns how it was made, for the manifest."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    config = config or Int8Config()
    if calibration.ndim != 4 or len(calibration) == 0:
        raise OnnxEdgeError(
            f"expected calibration images as [N, C, H, W] with N >= 1, found {calibration.shape}"
        )
    input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = _batches(calibration, input_name)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with tempfile.TemporaryDirectory(prefix="onnxedge-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # 1.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception as e:
            raise OnnxEdgeError(
                f"onnxruntime's quantisation pre-processing failed on {source}: {first_line(e)}"
            ) from None
        model = onnx.load(str(prepared))
        upgraded_from = default_opset(model)
        if upgraded_from < PER_CHANNEL_OPSET:  # 6.
            model = _upgraded(model, calibration[:8], input_name)
            onnx.save(model, str(prepared))
        if name_unnamed_nodes(model):
            onnx.save(model, str(prepared))
        excluded = head_node_names(model) if config.keep_head_float else []  # 3.
        if config.keep_first_conv_float:
            from onnxedge.runtime.variants.first_conv import first_conv_block  # needs onnx-ir

            excluded.extend(first_conv_block(model))
        reduced: list[str] | str = config.weights_7_bit  # 5.
        overrides = {}
        if reduced != "all":
            image = image_conv_weights(model, excluded)
            if reduced == "none":  # "none" where an image conv is in 8 bits, which may saturate
                reduced = "none" if image else []
            else:
                reduced = image
                if image:
                    overrides = {"TensorQuantOverrides": _reduce_range(image, config.per_channel)}
        method = methods[config.calibration_method]
        try:  # 2.
            with _quiet_quantizer():
                if method == CalibrationMethod.Entropy:
                    calibrated = {
                        "calibration_cache_path": _entropy_ranges(
                            prepared, _Reader(), Path(tmp) / "ranges.json"
                        )
                    }
                else:
                    calibrated = {"calibration_data_reader": _Reader()}
                quantize_static(
                    str(prepared),
                    str(target),
                    quant_format=QuantFormat.QDQ,
                    per_channel=config.per_channel,
                    activation_type=types[config.activation_type],
                    weight_type=types[config.weight_type],
                    calibrate_method=method,
                    nodes_to_exclude=excluded,
                    reduce_range=reduced == "all",
                    extra_options={"CalibTensorRangeSymmetric": False, **overrides},
                    **calibrated,
                )
        except OnnxEdgeError:
            raise
        except Exception as e:
            raise OnnxEdgeError(
                f"onnxruntime's static quantisation failed: {first_line(e)}"
            ) from None
    check_quantized(target)  # 4.
    return {
        "method": "onnxruntime.quantization.quantize_static after quant_pre_process",
        "quant_format": "QDQ",
        "per_channel": config.per_channel,
        "activation_type": config.activation_type,
        "weight_type": config.weight_type,
        "calibration_method": config.calibration_method,
        **(
            {"histogram_bins": ENTROPY_BINS, "quantized_bins": ENTROPY_QUANTIZED_BINS}
            if method == CalibrationMethod.Entropy
            else {}
        ),
        "kept_float": excluded,
        "weights_7_bit": reduced,
        **({"opset_upgraded_from": upgraded_from} if upgraded_from < PER_CHANNEL_OPSET else {}),
        "versions": package_versions(),
    }


def _upgraded(model: onnx.ModelProto, images: np.ndarray, input_name: str) -> onnx.ModelProto:
    """``model`` converted to opset `PER_CHANNEL_OPSET` by onnx's version converter, checked to
    compute what it computed on ``images`` under ONNX Runtime (float32 rounding apart)."""
    from onnx import version_converter

    from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session

    found = default_opset(model)
    try:
        upgraded = version_converter.convert_version(model, PER_CHANNEL_OPSET)
    except Exception as e:
        raise OnnxEdgeError(
            f"int8: the model's opset {found} has no per-channel DequantizeLinear (opset "
            f"{PER_CHANNEL_OPSET}), and onnx's version converter cannot convert it: "
            f"{first_line(e)}"
        ) from None
    feeds = {input_name: np.ascontiguousarray(images, dtype=np.float32)}
    before, after = (
        make_session(m.SerializeToString(), SessionConfig(provider="cpu")).run(None, feeds)
        for m in (model, upgraded)
    )
    for a, b in zip(after, before, strict=True):
        same = compare_arrays(a, b, atol=1e-6, rtol=1e-5)
        if not same:
            raise OnnxEdgeError(
                f"int8: the model converted from opset {found} to {PER_CHANNEL_OPSET} (for "
                "per-channel DequantizeLinear) computes otherwise: "
                + (same.detail or f"max abs error {same.max_abs_error:.3g}")
            )
    log.info("int8: opset %d upgraded to %d for per-channel quantisation", found, PER_CHANNEL_OPSET)
    return upgraded


def _reduce_range(weights: list[str], per_channel: bool) -> dict[str, list[dict[str, Any]]]:
    """``quantize_static``'s ``TensorQuantOverrides`` that give ``weights`` (Conv weights: output
    channels on axis 0) 7 bits."""
    axis = {"axis": 0} if per_channel else {}
    return {name: [{**axis, "reduce_range": True}] for name in weights}


def check_quantized(path: Path) -> None:
    """4. of the module docstring: a quantised model that `onnxedge check` would refuse is an
    error (a bug in the quantiser or here), never a variant."""
    from onnxedge.runtime.check.check import check_path

    report = check_path(path)
    if not report:
        raise OnnxEdgeError(
            f"the int8 model fails onnxedge check: {report.failures[0]}; not written"
        )


def _entropy_ranges(model: Path, reader: Any, cache: Path) -> str:
    """The entropy calibrator with `ENTROPY_BINS`, its ranges written where `quantize_static`
    reads a calibration cache (its ``calibration_cache_path``)."""
    import inspect

    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        from onnxedge.runtime.deps import onnxruntime_version

        raise OnnxEdgeError(
            "--calibration-method entropy: expected an onnxruntime whose quantize_static takes "
            f"calibration_cache_path (1.31 does), found {onnxruntime_version()}; use minmax or "
            "percentile"
        )
    calibrator = create_calibrator(
        model,
        augmented_model_path=str(cache.with_name("augmented.onnx")),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={
            "symmetric": False,
            "num_bins": ENTROPY_BINS,
            "num_quantized_bins": ENTROPY_QUANTIZED_BINS,
        },
    )
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), cache)
    return str(cache)


def _batches(images: np.ndarray, input_name: str) -> Iterator[dict[str, np.ndarray]]:
    """Batches of one size: onnxruntime's histogram calibrators (entropy, percentile) stack
    every batch's activations into one array, which fails on a shorter last batch."""
    size = calibration_batch(len(images))
    for start in range(0, len(images), size):
        yield {input_name: np.ascontiguousarray(images[start : start + size])}


def calibration_batch(count: int, largest: int = CALIBRATION_BATCH) -> int:
    """The largest batch size of at most ``largest`` that divides ``count`` images evenly."""
    return next(size for size in range(min(largest, count), 0, -1) if count % size == 0)


class _PerTensorFallback(logging.Filter):
    """onnxruntime's "Axis 1 is out-of-range for weight 'bn.weight' with rank 1": a 1-D weight
    (an unfused BatchNorm's scale, DenseNet's and pre-activation ResNets') quantised per tensor
    where per channel was asked. Nothing the user can act on: it goes to the log at debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "is out-of-range for weight" not in str(record.msg):
            return True
        log.debug("onnxruntime.quantization: %s (quantised per tensor)", record.getMessage())
        return False


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantiser logs its progress at INFO on the root logger (kept to warnings
    unless onnxedge runs with -v), and a 1-D weight it quantises per tensor at WARNING
    (`_PerTensorFallback`: at debug); its histogram calibrators print theirs to stdout, which
    is the command's report: that goes to the log at debug level."""
    root = logging.getLogger()
    saved = root.level
    if saved < logging.WARNING and not log.isEnabledFor(logging.INFO):
        root.setLevel(logging.WARNING)
    fallback = _PerTensorFallback()
    root.addFilter(fallback)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        root.removeFilter(fallback)
        root.setLevel(saved)
        for line in printed.getvalue().splitlines():
            log.debug("onnxruntime.quantization: %s", line)


__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_CALIBRATION_SIZE",
    "ENTROPY_BINS",
    "WEIGHTS_7_BIT",
    "Int8Config",
    "calibration_batch",
    "check_quantized",
    "quantize_int8",
]
