"""``--variant``: which of a bundle's models predict, parity and evaluate run (``fp32`` is
``model.onnx``; the others are what `onnxedge optimize` added), and bench's ``--variants``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from onnxedge.runtime.cli.options import name_list
from onnxedge.runtime.variants.manifest import FP32, VARIANTS

F = TypeVar("F", bound=Callable[..., Any])


def variant_option(command: F) -> F:
    """Add ``--variant`` to a command (parameter ``variant``)."""
    return click.option(
        "--variant",
        type=click.Choice(VARIANTS, case_sensitive=False),
        default=FP32,
        show_default=True,
        help="Which of the bundle's models: fp32 (model.onnx) or a variant `onnxedge optimize` "
        "added: int8; fp16 (the CUDA EP only); the ORT-format fp32-ort and int8-ort; "
        "int8-conv1-fp32 and int8-pad4 (int8 with the first conv in float, or its input "
        "padded to 4 channels); fp32-u8 and int8-u8 (taking uint8 pixels NHWC).",
    )(command)


def variant_list(default: tuple[str, ...] = (FP32,)) -> Callable[..., tuple[str, ...]]:
    """``--variants fp32,int8,fp16``: names out of `VARIANTS`."""
    return name_list(VARIANTS, what="variant", default=default)


__all__ = ["variant_list", "variant_option"]
