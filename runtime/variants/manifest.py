"""A bundle's variants as its manifest lists them: the ``variants`` block that `onnxedge optimize`
writes and `onnxedge.runtime.bundle.reader.Bundle` reads.

::

    "variants": {
      "int8": {"file": "variants/int8.onnx", "format": "onnx", "precision": "int8",
               "providers": ["cpu"], "gated": true, "gate": {...}, "made": {...}},
      ...
    }

Each variant's ``file`` is also listed in the manifest's ``files`` with its sha256, so the one
reader verifies it like ``model.onnx`` before it is run. ``fp32`` is not a variant: it is
``model.onnx`` itself. Only ``file`` and ``format`` are needed to run a variant; the rest records
how it was made (method, calibration, versions) and how it passed its gate.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from onnxedge.runtime.errors import ArgumentError, BundleError, OnnxEdgeError

FP32 = "fp32"  # model.onnx itself
INT8 = "int8"
FP16 = "fp16"
FP32_ORT = "fp32-ort"
INT8_ORT = "int8-ort"
# int8 with the first convolution (3 input channels) left in float, or with its input padded to
# 4 channels (`onnxedge.runtime.variants.first_conv`).
INT8_CONV1_FP32 = "int8-conv1-fp32"
INT8_PAD4 = "int8-pad4"
# fp32 and int8 with the preprocessing as their first nodes: they take uint8 pixels NHWC.
FP32_U8 = "fp32-u8"
INT8_U8 = "int8-u8"
# Every name `--variant` takes, in the order reports list them.
VARIANTS = (FP32, INT8, FP16, FP32_ORT, INT8_ORT, INT8_CONV1_FP32, INT8_PAD4, FP32_U8, INT8_U8)
FORMATS = ("onnx", "ort")
# Where `onnxedge optimize` writes each variant inside the bundle.
VARIANT_FILES = {
    INT8: "variants/int8.onnx",
    FP16: "variants/fp16.onnx",
    FP32_ORT: "variants/fp32.ort",
    INT8_ORT: "variants/int8.ort",
    INT8_CONV1_FP32: "variants/int8-conv1-fp32.onnx",
    INT8_PAD4: "variants/int8-pad4.onnx",
    FP32_U8: "variants/fp32-u8.onnx",
    INT8_U8: "variants/int8-u8.onnx",
}
# The operators the ORT-format variants need, for a minimal onnxruntime build
# (`--include_ops_by_config`).
ORT_CONFIG = "variants/required_operators.config"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@dataclasses.dataclass(frozen=True)
class VariantEntry:
    """One variant of the manifest. ``providers``: the execution providers it is made for (short
    names; fp16 is made for ``cuda``). ``gated``: whether it passed the accuracy gate (False:
    written with ``--no-gate``). ``block``: the manifest's whole entry."""

    name: str
    file: str
    format: str
    precision: str
    providers: tuple[str, ...]
    gated: bool
    block: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.block)


def read_variants(
    manifest: Mapping[str, Any], source: str, files: Mapping[str, Any]
) -> dict[str, VariantEntry]:
    """The manifest's ``variants`` block, checked: names, a file listed in ``files`` and a format
    for each. A manifest without the block has no variants."""
    block = manifest.get("variants", {})
    if not isinstance(block, dict):
        raise BundleError(
            f"{source}: expected 'variants' to map names to entries, found {type(block).__name__}"
        )
    variants = {}
    for name, entry in block.items():
        where = f"{source}: variants[{name!r}]"
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name == FP32:
            raise BundleError(
                f"{where}: expected a name of lowercase letters, digits and '-' other than "
                f"{FP32!r} (model.onnx itself)"
            )
        if not isinstance(entry, dict):
            raise BundleError(f"{where}: expected an object, found {type(entry).__name__}")
        file, fmt = entry.get("file"), entry.get("format")
        if not isinstance(file, str) or file not in files:
            raise BundleError(
                f"{where}: expected 'file' naming a file the manifest lists with its sha256, "
                f"found {file!r}"
            )
        if fmt not in FORMATS:
            raise BundleError(f"{where}: expected 'format' {' or '.join(FORMATS)}, found {fmt!r}")
        providers = entry.get("providers", ["cpu"])
        if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers):
            raise BundleError(
                f"{where}: expected 'providers' as a list of names, found {providers!r}"
            )
        variants[name] = VariantEntry(
            name=name,
            file=file,
            format=fmt,
            precision=str(entry.get("precision", "")),
            providers=tuple(providers),
            gated=entry.get("gated") is True,
            block=entry,
        )
    return variants


# Logged where an int8 model of `made_with_8_bit_image_conv` runs on a CPU whose int8 kernels
# add in pairs into 16 bits (`onnxedge.runtime.engines.cpu.int8_pairs_saturate`).
EIGHT_BIT_IMAGE_CONV = (
    "{path}: the {variant} variant was quantised with 8-bit weights for the convolution that "
    "reads the image, and this CPU has no VNNI, so its int8 kernels add products in pairs into "
    '16 bits, which can saturate there and change labels (docs/VARIANTS.md, "int8 on x86 CPUs '
    'without VNNI"); remake it: onnxedge optimize BUNDLE --data DIR --int8 --force'
)


def made_with_8_bit_image_conv(variants: Mapping[str, VariantEntry], variant: Any) -> bool:
    """Whether ``variant`` is an int8 model whose quantisation (its own ``made`` block, or that
    of the variant it was ``from``: int8-ort, int8-u8) left the convolutions that read the image
    in 8 bits: made before the 7-bit weights (no ``weights_7_bit``), or with
    ``--int8-7-bit-weights none`` (``"none"``; ``[]`` where those convolutions stayed float).
    False for anything else, and where the chain breaks off."""
    entry, seen = variants.get(variant_key(variant)), set()
    while entry is not None and entry.precision == "int8" and entry.name not in seen:
        seen.add(entry.name)
        made = entry.block.get("made")
        if isinstance(made, dict) and "quant_format" in made:
            return made.get("weights_7_bit", "none") == "none"
        entry = variants.get(str(entry.block.get("from")))
    return False


def provider_for(variants: Mapping[str, VariantEntry], variant: Any, provider: str) -> str:
    """The provider to run ``variant`` on when ``provider`` (``auto``, ``cpu``, ``cuda``) is
    asked for: a variant made only for the GPU (fp16) is refused on the CPU EP, where it runs
    slower than fp32, and ``auto`` means its GPU provider, never a silent CPU fallback."""
    entry = variants.get(variant_key(variant))
    if entry is None or "cpu" in entry.providers or not entry.providers:
        return provider
    made_for = ", ".join(entry.providers)
    if provider == "cpu":
        raise OnnxEdgeError(
            f"the {entry.name} variant is made for the {made_for} execution provider, not the "
            "CPU, where fp32 is faster: use --variant fp32 or int8"
        )
    return entry.providers[0] if provider == "auto" else provider


def variant_key(variant: Any) -> str:
    """``variant`` as a name: None and ``fp32`` are ``model.onnx``; names are case-insensitive."""
    if variant is None:
        return FP32
    if not isinstance(variant, str) or not variant.strip():
        raise ArgumentError(
            f"expected a variant name such as {', '.join(VARIANTS)}, got {variant!r}"
        )
    return variant.strip().lower()


__all__ = [
    "EIGHT_BIT_IMAGE_CONV",
    "FORMATS",
    "FP16",
    "FP32",
    "FP32_ORT",
    "FP32_U8",
    "INT8",
    "INT8_CONV1_FP32",
    "INT8_ORT",
    "INT8_PAD4",
    "INT8_U8",
    "ORT_CONFIG",
    "VARIANTS",
    "VARIANT_FILES",
    "VariantEntry",
    "made_with_8_bit_image_conv",
    "provider_for",
    "read_variants",
    "variant_key",
]
