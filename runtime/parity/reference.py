"""The reference parity compares against (`Reference`, one `ReferenceBatch` per batch size) and
the golden inputs it is made of: structured images through the runtime's preprocessing, then
real images, then random rows."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxedge.runtime.classifier.preprocess import normalize, preprocess_image
from onnxedge.runtime.errors import OnnxEdgeError

DEFAULT_BATCH_SIZES = (1, 2, 7, 64)
GOLDEN_SEED = 0
# Synthetic images, preprocessed as the manifest says: black, white, mid-grey (128), a left-to-right
# and a top-to-bottom ramp. With the default preprocessing: all zeros, all ones, 0.502, gradients.
STRUCTURED_KINDS = ("zeros", "ones", "grey", "gradient-h", "gradient-v")
RANDOM_KIND = "random"
IMAGE_PREFIX = "image:"
# Width x height of the synthetic images: neither square nor the model's size, so that the crop
# and the resize of the preprocessing both run on them (CelebA's 178x218, halved).
STRUCTURED_SOURCE_SIZE = (89, 109)


def structured_image(kind: str, size: tuple[int, int] = STRUCTURED_SOURCE_SIZE) -> Any:
    """The synthetic 8-bit RGB PIL image for one of `STRUCTURED_KINDS`."""
    from PIL import Image

    width, height = size
    if kind == "zeros":
        pixels = np.zeros((height, width), dtype=np.uint8)
    elif kind == "ones":
        pixels = np.full((height, width), 255, dtype=np.uint8)
    elif kind == "grey":
        pixels = np.full((height, width), 128, dtype=np.uint8)
    elif kind == "gradient-h":
        ramp = np.round(np.linspace(0, 255, width)).astype(np.uint8)
        pixels = np.broadcast_to(ramp[None, :], (height, width))
    elif kind == "gradient-v":
        ramp = np.round(np.linspace(0, 255, height)).astype(np.uint8)
        pixels = np.broadcast_to(ramp[:, None], (height, width))
    else:
        raise ValueError(f"unknown structured input {kind!r}")
    rgb = np.repeat(np.ascontiguousarray(pixels)[:, :, None], 3, axis=2)
    return Image.fromarray(rgb, mode="RGB")


def structured_input(kind: str, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """A structured input row [C, H, W]: its synthetic image through `preprocess_image`."""
    return preprocess_image(structured_image(kind), preprocessing)


def random_rows(
    count: int, preprocessing: Mapping[str, Any], *, seed: int = GOLDEN_SEED
) -> np.ndarray:
    """``count`` rows [N, C, H, W] of uniform random 8-bit pixel values (0 to 255, as an image
    has), scaled and normalised as the preprocessing states. Row i comes from its own generator
    (``[seed, i]``), so the first k rows are the same whatever ``count``: the random rows of a
    smaller golden batch are rows of the largest one."""
    height, width = (int(v) for v in preprocessing["resize"])
    channels = 1 if preprocessing.get("color", "RGB") == "L" else 3
    pixels = np.empty((count, height, width, channels), dtype=np.uint8)
    for i in range(count):
        pixels[i] = np.random.default_rng([seed, i]).integers(0, 256, pixels.shape[1:], np.uint8)
    return normalize(pixels, preprocessing)


def golden_inputs(
    batch: int,
    preprocessing: Mapping[str, Any],
    *,
    images: Sequence[tuple[str, np.ndarray]] = (),
    seed: int = GOLDEN_SEED,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The inputs of one golden batch and what each row is.

    The first rows are the structured inputs, then the real images (``images``: name and
    preprocessed array), as many as fit while leaving at least one random row; the rest is random.
    So batch 1 is one random row, batch 2 is zeros and a random row, batch 7 has every structured
    input and two random rows; each is a selection of the largest batch's rows.
    """
    if batch < 1:
        raise OnnxEdgeError(f"expected a batch size of at least 1, found {batch}")
    fixed: list[tuple[str, np.ndarray]] = [
        (kind, structured_input(kind, preprocessing)) for kind in STRUCTURED_KINDS
    ]
    fixed += [(f"{IMAGE_PREFIX}{name}", array) for name, array in images]
    fixed = fixed[: batch - 1]
    rows = [array[None] for _, array in fixed]
    rows.append(random_rows(batch - len(fixed), preprocessing, seed=seed))
    kinds = tuple(kind for kind, _ in fixed) + (RANDOM_KIND,) * (batch - len(fixed))
    return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32), kinds


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclasses.dataclass(frozen=True)
class ReferenceBatch:
    """One batch of reference data: inputs and PyTorch's outputs for them."""

    inputs: np.ndarray  # float32 [N, C, H, W]
    kinds: tuple[str, ...]  # what each row is: zeros, ..., image:<name>, random
    prob: np.ndarray  # float64 [N, 1]: the float64 model on the float64 inputs (the truth)
    logits: np.ndarray  # float64 [N, 1]: the Sigmoid's input
    prob_f32: np.ndarray  # float32 [N, 1]: the float32 model, for comparison
    logits_f32: np.ndarray

    @property
    def batch(self) -> int:
        return int(self.inputs.shape[0])


@dataclasses.dataclass(frozen=True)
class Reference:
    """What parity compares against: reference batches and the preprocessing they were made with."""

    source: str  # "golden" or "live"
    description: str
    preprocessing: Mapping[str, Any]
    batches: Mapping[int, ReferenceBatch]
    logits_name: str | None = None  # the pre-sigmoid tensor in model.onnx, where recorded
    seed: int = GOLDEN_SEED
    # What the truth was computed in: float64 (PyTorch's float64 copy, onnx's float64 evaluator)
    # or float32 (an imported file under ONNX Runtime CPU), which widens parity's tolerances.
    precision: str = "float64"
    # Each output's largest |float32 - float64| over PyTorch's float32 runs with several kernels
    # ({"prob": ..., "logits": ..., "runs": [...]}); None where only the one run was made.
    float32_spread: Mapping[str, Any] | None = None

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.batches))

    def batch(self, size: int) -> ReferenceBatch:
        if size not in self.batches:
            raise OnnxEdgeError(
                f"the {self.source} reference has no batch of {size}: it holds batch sizes "
                f"{', '.join(map(str, self.batch_sizes))} (re-export, or use --reference live "
                "to compute any batch size)"
            )
        return self.batches[size]

    def select(self, sizes: Sequence[int]) -> Reference:
        """The same reference limited to ``sizes`` (each must be present)."""
        batches = {size: self.batch(size) for size in sizes}
        return dataclasses.replace(self, batches=batches)
