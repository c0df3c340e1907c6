"""Labelled image data for training and evaluation, torch-free.

::

    from onnxedge.runtime.data import open_dataset

    data = open_dataset("build/faces")  # layout detected; CelebA's attribute Smiling
    test = data.split("test")  # Split: paths, labels (class indices)
    data.class_names                 # ("not smiling", "smiling"): 0 negative, 1 positive

Two layouts, told apart by what the folder holds (`detect_layout`): CelebA's files
(`onnxedge.runtime.data.celeba`), or class folders with or without split folders
(`onnxedge.runtime.data.folders`). `onnxedge.runtime.data.synth` draws faces in CelebA's layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxedge.runtime.data.celeba import DEFAULT_ATTRIBUTE, is_celeba, read_celeba
from onnxedge.runtime.data.dataset import (
    SPLITS,
    DataError,
    Dataset,
    Split,
    check_two_classes,
    with_classes,
)
from onnxedge.runtime.data.folders import has_split_folders, read_class_folders
from onnxedge.runtime.errors import ArgumentError

LAYOUTS = ("celeba", "class-folders", "class-folders-hashed")


def detect_layout(root: str | Path) -> str:
    """``celeba`` when ``root`` holds any of CelebA's three entries, ``class-folders`` when it
    holds a train, val or test folder, else ``class-folders-hashed``."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"expected a data directory, found nothing at {root}")
    if not root.is_dir():
        raise DataError(f"expected a data directory, found a file at {root}")
    if is_celeba(root):
        return "celeba"
    return "class-folders" if has_split_folders(root) else "class-folders-hashed"


def open_dataset(
    root: str | Path, attribute: str | None = None, classes: Sequence[str] | None = None
) -> Dataset:
    """Read the data set under ``root`` in the layout it holds, as a binary classification, or,
    with ``classes`` (a K-class model's class names), as class folders named by them
    (`with_classes`).

    ``attribute`` is the CelebA attribute to classify (None: ``Smiling``); class folders name
    their classes, so an attribute there is an error rather than silently ignored.
    """
    if attribute is not None and not isinstance(attribute, str):  # 3: a TypeError in the reader
        raise ArgumentError(f"expected attribute as a CelebA attribute's name, got {attribute!r}")
    root = Path(root)
    layout = detect_layout(root)
    if layout == "celeba":
        data = read_celeba(root, attribute)
    else:
        if attribute is not None:
            raise DataError(
                f"--attribute {attribute} applies to CelebA's layout; {root} holds class "
                "folders, whose names are the classes"
            )
        data = read_class_folders(root)
    if classes is not None:
        if layout == "celeba":
            raise DataError(
                f"{root} holds CelebA's layout (one binary attribute); a model of "
                f"{len(classes)} classes needs class folders named by its classes"
            )
        return with_classes(data, classes)
    check_two_classes(data.class_names, str(root))
    return data


__all__ = [
    "DEFAULT_ATTRIBUTE",
    "LAYOUTS",
    "SPLITS",
    "DataError",
    "Dataset",
    "Split",
    "detect_layout",
    "open_dataset",
]
