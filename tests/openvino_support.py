"""What the OpenVINO tests share: the skip mark (with the reason, never a pass) and an int8 QDQ
model made with onnxruntime's own quantizer, as the bundle's int8 variant is."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from onnxedge.runtime.engines.openvino.loader import unavailable_reason

OPENVINO_MISSING = unavailable_reason()
requires_openvino = pytest.mark.skipif(
    OPENVINO_MISSING is not None, reason=f"openvino engine unavailable: {OPENVINO_MISSING}"
)


def make_int8_qdq(model: Path, out: Path, *, seed: int = 0) -> Path:
    """``model`` statically quantized to int8 QDQ (u8 activations, s8 per-channel weights),
    calibrated on a few random batches."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(seed)
            batches = [rng.random((4, 3, 64, 64), dtype=np.float32) for _ in range(4)]
            self._it = iter([{"input": b} for b in batches])

        def get_next(self):
            return next(self._it, None)

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantizer's "consider pre-processing" advice
    try:
        quantize_static(
            str(model),
            str(out),
            _Batches(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    finally:
        quiet.setLevel(level)
    return out
