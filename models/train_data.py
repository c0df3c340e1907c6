"""A `Split` as a ``torch.utils.data.Dataset``: the device's preprocessing, plus the book's random
crop and horizontal flip for training.

The pixels come from `onnxedge.runtime.classifier.preprocess`, the code the device runs:
`open_image` (the same
checks and RGB conversion as `load_image`), then `preprocess_image`. Evaluation images are exactly
``load_image(path, spec)``; a training image is the largest square at a random place instead of the
centred one (CelebA's 178x218 -> 178x178 with a random vertical offset, as the book's
``RandomCrop([178, 178])``), resized and scaled the same way, then flipped with probability 1/2.

Randomness is drawn from ``numpy.random.default_rng([seed, epoch, index])``, never from a worker's
state, so the batches are the same whatever the number of loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from onnxedge.runtime.classifier.crop import center_square, crop_fraction, draft_side
from onnxedge.runtime.classifier.preprocess import (
    FAST,
    ImageReadError,
    open_image,
    preprocess_image,
)
from onnxedge.runtime.data import Split


def square_box(
    size: tuple[int, int], rng: np.random.Generator | None, fraction: float = 1.0
) -> tuple[int, int, int, int]:
    """The square the device's crop keeps of an image of ``size`` (width, height), ``fraction``
    of its shorter side (`center_square`): centred as the device crops it (`preprocess_image`)
    when ``rng`` is None, else at a random offset."""
    width, height = size
    centred = center_square(width, height, fraction)
    if rng is None:
        return centred
    side = centred[2] - centred[0]
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    return left, top, left + side, top + side


def training_image(
    path: Any, spec: Mapping[str, Any], rng: np.random.Generator | None
) -> np.ndarray:
    """float32 [C, H, W] for training (``rng`` given: random square, random flip) or evaluation
    (``rng`` None: the device's pixels). A ``decode`` of ``fast`` in ``spec`` (`train --decode
    fast`) decodes as the device's fast path does (`load_pixels`)."""
    image = open_image(path, draft_side=draft_side(spec) if spec.get("decode") == FAST else None)
    if rng is None:
        return preprocess_image(image, spec)
    if spec.get("crop", "none") == "center-square":
        image = image.crop(square_box(image.size, rng, crop_fraction(spec)))
    array = preprocess_image(image, {**spec, "crop": "none"})
    if rng.random() < 0.5:
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


class SplitDataset(Dataset):
    """Items are ``(image, label, index, ok)``; an image that cannot be read comes back as zeros
    with ``ok`` False, so one bad file is counted and skipped instead of stopping the run.

    Indexed by ``(index, epoch)`` (what `EpochSampler` yields) when ``augment`` is set, so each
    epoch draws fresh crops and flips; by ``index`` or ``(index, epoch)`` otherwise."""

    def __init__(
        self, split: Split, spec: Mapping[str, Any], *, augment: bool, seed: int = 0
    ) -> None:
        self.split = split
        self.spec = dict(spec)
        self.augment = augment
        self.seed = seed
        self.shape = (3, *(int(v) for v in spec["resize"]))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(
        self, key: int | tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        rng = np.random.default_rng([self.seed, epoch, index]) if self.augment else None
        label = torch.tensor([float(self.split.labels[index])])
        try:
            image = training_image(self.split.paths[index], self.spec, rng)
        except ImageReadError:
            return torch.zeros(self.shape), label, index, False
        return torch.from_numpy(image), label, index, True


class EpochSampler(Sampler):
    """A permutation of the split for each epoch, from ``default_rng([seed, epoch])``, yielding
    ``(index, epoch)``; call `set_epoch` before each epoch."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        return iter([(int(i), self.epoch) for i in order])
