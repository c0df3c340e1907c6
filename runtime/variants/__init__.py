"""Edge variants of a bundle's model: int8 for CPUs, fp16 for GPUs, the ORT format for reduced
onnxruntime builds, each gated by accuracy on held-out data (`onnxedge optimize`).

One module per job: `manifest` (the ``variants`` block of a bundle's manifest; the bundle reader
uses it), `quantize` (int8: onnxruntime's static QDQ quantisation), `fp16` (float16 weights and
compute, float32 inputs and outputs), `ortformat` (``.ort`` files and the required-operators
configuration), `samples` (the data set's images as model inputs: the calibration sample and the
test split), `gate` (the accuracy gates), `optimize` (all of them, then the bundle written
atomically). The heavy ones (onnxruntime's quantisation tools) are imported only by `optimize`;
nothing here imports torch.
"""

from __future__ import annotations

from onnxedge.runtime.variants.manifest import (
    FP16,
    FP32,
    FP32_ORT,
    INT8,
    INT8_CONV1_FP32,
    INT8_ORT,
    INT8_PAD4,
    ORT_CONFIG,
    VARIANT_FILES,
    VARIANTS,
    VariantEntry,
    provider_for,
    read_variants,
    variant_key,
)

__all__ = [
    "FP16",
    "FP32",
    "FP32_ORT",
    "INT8",
    "INT8_CONV1_FP32",
    "INT8_ORT",
    "INT8_PAD4",
    "ORT_CONFIG",
    "VARIANTS",
    "VARIANT_FILES",
    "VariantEntry",
    "provider_for",
    "read_variants",
    "variant_key",
]
