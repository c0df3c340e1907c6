"""A small registry of exportable models, by name.

The registry itself never imports torch: a spec names its factory as ``"module:function"`` and the
factory is imported only when a model is built. So ``onnxedge export --model typo`` answers at once,
and adding a model is one `register_model` call in its own module, with no change to the exporter.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
from collections.abc import Mapping
from typing import Any

from onnxedge.runtime.classifier.args import is_integer
from onnxedge.runtime.classifier.preprocess import RESIZE_MODES
from onnxedge.runtime.errors import OnnxEdgeError

# How images become the model's input. The runtime (`onnxedge.runtime.classifier.preprocess`)
# implements
# exactly this, and the golden images are made with it, so the two cannot drift apart.
SQUARE_CROP_64 = {
    "color": "RGB",
    "crop": "center-square",  # the largest centred square (CelebA 178x218 -> 178x178, as the book)
    "resize": [64, 64],  # [height, width]
    "interpolation": "bilinear",  # PIL.Image.Resampling.BILINEAR, applied after the crop
    "scale": 1.0 / 255.0,  # uint8 -> float32 in [0, 1], as torchvision's ToTensor
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
    "layout": "NCHW",
    "dtype": "float32",
}


# channel_order ("RGB" or "BGR", the order the model takes), resize_mode and pad_value are only
# written where given, so a manifest without them reads as before.
PREPROCESSING_KEYS = frozenset(SQUARE_CROP_64) | {
    "channel_order",
    "resize_mode",
    "pad_value",
    "crop_fraction",  # what the center-square crop keeps of the shorter side (1: all of it)
}
CROPS = ("none", "center-square")
CHANNEL_ORDERS = ("RGB", "BGR")
COLORS = ("RGB", "L")  # three channels, or one (8-bit grayscale, PIL's "L")


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def image_preprocessing(height: int, width: int, **overrides: Any) -> dict[str, Any]:
    """The preprocessing of a model whose input is C x ``height`` x ``width``: RGB, no crop,
    bilinear resize to H x W, scaled to [0, 1]; ``overrides`` replace any of these keys
    (``color`` RGB or L, ``crop``, ``resize``, ``resize_mode``, ``pad_value``,
    ``interpolation``, ``scale``, ``mean``, ``std``, ``channel_order``). ``mean`` and ``std``
    hold one number per channel: three for RGB, one for L."""
    spec: dict[str, Any] = {
        **SQUARE_CROP_64,
        "crop": "none",
        "resize": [int(height), int(width)],
    }
    unknown = sorted(set(overrides) - PREPROCESSING_KEYS)
    if unknown:
        raise OnnxEdgeError(
            f"unknown preprocessing key {unknown[0]!r}; expected some of: "
            + ", ".join(sorted(PREPROCESSING_KEYS))
        )
    if overrides.get("color") == "L":
        spec.update(mean=[0.0], std=[1.0])
    spec.update(overrides)
    if spec["color"] not in COLORS:
        raise OnnxEdgeError(f"color: expected RGB or L, found {spec['color']!r}")
    if spec["crop"] not in CROPS:
        raise OnnxEdgeError(f"crop: expected one of {', '.join(CROPS)}, found {spec['crop']!r}")
    channels = 1 if spec["color"] == "L" else 3
    for key in ("mean", "std"):
        value = spec[key]
        if not (isinstance(value, (list, tuple)) and len(value) == channels):
            what = (
                "one number (grayscale)"
                if channels == 1
                else "three numbers, one per channel in the model's channel order (R, G, B; "
                "B, G, R with channel_order BGR)"
            )
            raise OnnxEdgeError(f"{key}: expected {what}, found {value!r}")
        if not all(_real(v) for v in value):
            raise OnnxEdgeError(f"{key}: expected finite numbers, found {value!r}")
        spec[key] = [float(v) for v in value]
    if "crop_fraction" in spec:
        fraction = spec["crop_fraction"]
        if not (isinstance(fraction, (int, float)) and 0.0 < fraction <= 1.0):
            raise OnnxEdgeError(f"crop_fraction: expected a number in (0, 1], found {fraction!r}")
        if spec["crop"] != "center-square":
            raise OnnxEdgeError(
                f"crop_fraction: expected crop center-square (what it is a fraction of), found "
                f"crop {spec['crop']!r}"
            )
        spec["crop_fraction"] = float(fraction)
    if spec.get("channel_order", "RGB") not in CHANNEL_ORDERS:
        raise OnnxEdgeError(f"channel_order: expected RGB or BGR, found {spec['channel_order']!r}")
    if channels == 1 and spec.get("channel_order", "RGB") != "RGB":
        raise OnnxEdgeError("channel_order: a grayscale (one-channel) input has no channel order")
    if spec.get("resize_mode", "stretch") not in RESIZE_MODES:
        raise OnnxEdgeError(
            f"resize_mode: expected one of {', '.join(RESIZE_MODES)}, found {spec['resize_mode']!r}"
        )
    if "pad_value" in spec:
        if not _real(spec["pad_value"]):
            raise OnnxEdgeError(f"pad_value: expected a finite number, found {spec['pad_value']!r}")
        spec["pad_value"] = float(spec["pad_value"])
    scale = spec["scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise OnnxEdgeError(f"scale: expected a positive number, found {scale!r}")
    spec["scale"] = float(scale)
    if 0.0 in spec["std"]:
        raise OnnxEdgeError(f"std: expected no zeros, found {spec['std']}")
    resize = spec["resize"]
    if not (
        isinstance(resize, (list, tuple))
        and len(resize) == 2
        and all(is_integer(v) and v >= 1 for v in resize)
    ):
        raise OnnxEdgeError(
            f"resize: expected [height, width], two integers >= 1, found {resize!r}"
        )
    spec["resize"] = [int(v) for v in resize]
    return spec


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the exporter needs to know about a model, without building it."""

    name: str
    factory: str  # "module:function", called as factory(head=...) -> torch.nn.Module
    input_shape: tuple[int, int, int]  # C, H, W; the batch dim is always dynamic
    heads: tuple[str, ...]
    default_head: str
    preprocessing: Mapping[str, Any]
    labels: Mapping[str, Any]
    description: str = ""

    def resolve_head(self, head: str | None) -> str:
        """The head to use: ``head``, or the default when None; an unknown name is an error."""
        head = self.default_head if head is None else head  # "" was taken as the default
        if head not in self.heads:
            raise OnnxEdgeError(
                f"unknown head {head!r} for model {self.name!r}; expected one of: "
                + ", ".join(self.heads)
            )
        return head

    def build(self, head: str | None = None) -> Any:
        """Build the torch module with the given GAP head (weights as initialised)."""
        head = self.resolve_head(head)
        module_name, _, attr = self.factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(head=head)


# The GAP heads of smile_cnn (models/smile_cnn.py builds them); here so that the registry stays
# torch-free.
SMILE_CNN_HEADS = ("avgpool", "adaptive", "mean")

_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def available_models() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OnnxEdgeError(
            f"unknown model {name!r}; expected one of: {', '.join(available_models())}"
        ) from None


register_model(
    ModelSpec(
        name="smile_cnn",
        factory="onnxedge.models.smile_cnn:smile_cnn",
        input_shape=(3, 64, 64),
        heads=SMILE_CNN_HEADS,
        default_head="avgpool",
        preprocessing=SQUARE_CROP_64,
        labels={"threshold": 0.5, "positive": "smiling", "negative": "not smiling"},
        description="CelebA smile classifier: four 3x3 convs, GAP head, Linear(256, 1), sigmoid",
    )
)
