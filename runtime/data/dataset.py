"""What the readers return: a labelled data set of image files, split into train, val and test.

Torch-free, so that `onnxedge evaluate` and the quantisation gates run where only the runtime is
installed; the training side wraps a `Split` in a ``torch.utils.data.Dataset``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.names import name_bytes

SPLITS = ("train", "val", "test")


class DataError(OnnxEdgeError):
    """A data folder that cannot be read as a labelled data set; the message says what was
    expected and what was found."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: image paths and their class indices (into `Dataset.class_names`), in order."""

    name: str
    paths: tuple[Path, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self, classes: int = 2) -> tuple[int, ...]:
        """Images per class index."""
        found = [0] * classes
        for label in self.labels:
            found[label] += 1
        return tuple(found)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A labelled image data set read from ``root``.

    ``layout``: ``celeba`` (CelebA's files), ``class-folders`` (``root/<split>/<class>/``) or
    ``class-folders-hashed`` (``root/<class>/``, split by a hash of each file name).
    ``class_names``: index 0 is the negative class, index 1 the positive one (what the model's
    probability is about). ``attribute``: the CelebA attribute, or None for class folders.
    """

    root: Path
    layout: str
    class_names: tuple[str, ...]
    splits: Mapping[str, Split]
    attribute: str | None = None

    def split(self, name: str) -> Split:
        """The split ``name``; an error naming the splits this data set has."""
        if name not in self.splits:
            raise DataError(
                f"{self.root}: no {name!r} split; this {self.layout} data set has: "
                + ", ".join(self.splits)
            )
        return self.splits[name]

    @property
    def labels(self) -> dict[str, Any]:
        """A manifest's ``labels`` block for a binary classifier of this data set."""
        return {"threshold": 0.5, "positive": self.class_names[1], "negative": self.class_names[0]}

    def listing_sha256(self) -> str:
        """sha256 of the listing (split, file name relative to the root, class name per image), so
        a checkpoint records which data it was trained on without hashing the images. Over the
        names' bytes as the system gives them (a name need not be UTF-8)."""
        digest = hashlib.sha256()
        for split in self.splits.values():
            for path, label in zip(split.paths, split.labels, strict=True):
                rel = name_bytes(path.relative_to(self.root).as_posix())
                name = name_bytes(self.class_names[label])
                digest.update(b"%s\t%s\t%s\n" % (name_bytes(split.name), rel, name))
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """What a checkpoint's metadata and an evaluation report record about the data."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "attribute": self.attribute,
            "class_names": list(self.class_names),
            "images": {
                name: dict(zip(self.class_names, s.counts(len(self.class_names)), strict=True))
                for name, s in self.splits.items()
            },
            "listing_sha256": self.listing_sha256(),
        }


def check_two_classes(names: tuple[str, ...], where: str) -> None:
    """The smile model is a binary classifier: exactly two classes."""
    if len(names) < 2:
        raise DataError(
            f"{where}: expected two classes, found only {', '.join(map(repr, names)) or 'none'}"
        )
    if len(names) > 2:
        raise DataError(
            f"{where}: expected two classes for a binary classifier, found {len(names)}: "
            + ", ".join(names)
        )


def with_classes(data: Dataset, classes: Sequence[str]) -> Dataset:
    """``data`` relabelled for a model of K ``classes`` (a K-class bundle's class names): each
    class folder must be named as one of them, and its images take that class's index. Folders
    for only some of the classes are fine (an evaluation of a subset), two at least: a data set
    of one class is refused when it is read. A folder that names no class is an error listing
    the classes."""
    names = list(classes)
    unknown = [n for n in data.class_names if n not in names]
    if unknown:
        shown = ", ".join(map(repr, names[:12])) + (" ..." if len(names) > 12 else "")
        raise DataError(
            f"{data.root}: class folder {unknown[0]!r} is not one of the model's {len(names)} "
            f"classes ({shown})"
        )
    index = [names.index(n) for n in data.class_names]
    splits = {
        name: Split(split.name, split.paths, tuple(index[label] for label in split.labels))
        for name, split in data.splits.items()
    }
    return dataclasses.replace(data, class_names=tuple(names), splits=splits)
