"""Class folders: ``ROOT/<split>/<class>/*`` (splits train, val, test) or ``ROOT/<class>/*``.

Class names are the folder names, sorted: index 0 is the negative class, index 1 the positive one
(``not_smiling`` and ``smiling`` sort that way). Image files are the names `is_image_name` takes,
directly inside a class folder (an entry so named that is not a file is listed too, and fails as
an image does); hidden entries (``.name``) are skipped, and so are other files.

Without split folders, each image goes to a split by a hash of its file name (`hashed_split`):
80% train, 10% val, 10% test, the same on every machine and whatever else is in the folder.

Refused, each with one line: a class folder with no image, a single class, split folders beside
other folders, split folders whose class folders differ, no class folder at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from onnxedge.runtime.classifier.preprocess import IMAGE_EXTENSIONS, is_image_name
from onnxedge.runtime.data.dataset import SPLITS, DataError, Dataset, Split
from onnxedge.runtime.names import escape

log = logging.getLogger(__name__)


def has_split_folders(root: Path) -> bool:
    return any((root / split).is_dir() for split in SPLITS)


def hashed_split(file_name: str) -> str:
    """train, val or test for a file name: the first 8 bytes of its sha256 modulo 10, 0-7 train,
    8 val, 9 test."""
    # the name's bytes as the system gave them: one that is not UTF-8 (surrogate-escaped) too
    bucket = int.from_bytes(hashlib.sha256(os.fsencode(file_name)).digest()[:8], "big") % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def read_class_folders(root: str | Path) -> Dataset:
    """Read ``root`` as split folders of class folders, or as class folders split by hash."""
    root = Path(root)
    folders = _subfolders(root)
    if has_split_folders(root):
        others = [f for f in folders if f not in SPLITS]
        if others:
            raise DataError(
                f"{root}: expected split folders ({', '.join(SPLITS)}) or class folders, found "
                f"both: {', '.join(f for f in folders if f in SPLITS)} and {', '.join(others)}"
            )
        return _read_split_folders(root, folders)
    if not folders:
        raise DataError(
            f"{root}: expected class folders (ROOT/<class>/*.jpg) or split folders "
            f"(ROOT/train/<class>/...), found no folder"
        )
    names = tuple(folders)
    _check_classes(names, root)
    per_split: dict[str, tuple[list[Path], list[int]]] = {s: ([], []) for s in SPLITS}
    for label, name in enumerate(names):
        for path in _images(root / name):
            paths, labels = per_split[hashed_split(path.name)]
            paths.append(path)
            labels.append(label)
    splits = {s: Split(s, tuple(p), tuple(lab)) for s, (p, lab) in per_split.items() if p}
    return Dataset(root=root, layout="class-folders-hashed", class_names=names, splits=splits)


def _read_split_folders(root: Path, splits_found: list[str]) -> Dataset:
    classes: tuple[str, ...] | None = None
    first = ""
    splits = {}
    for split in (s for s in SPLITS if s in splits_found):
        names = tuple(_subfolders(root / split))
        _check_classes(names, root / split)
        if classes is None:
            classes, first = names, split
        elif names != classes:
            raise DataError(
                f"{root}: expected the same class folders in every split, found "
                f"{first}: {', '.join(classes)} but {split}: {', '.join(names)}"
            )
        paths: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(names):
            found = _images(root / split / name)
            paths += found
            labels += [label] * len(found)
        splits[split] = Split(split, tuple(paths), tuple(labels))
    assert classes is not None  # has_split_folders said at least one split exists
    return Dataset(root=root, layout="class-folders", class_names=classes, splits=splits)


def _check_classes(names: tuple[str, ...], where: Path) -> None:
    if len(names) < 2:
        raise DataError(
            f"{where}: expected a folder per class (two or more), found "
            + (f"a single class {names[0]!r}" if names else "no class folder")
        )


def _subfolders(path: Path) -> list[str]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"{path}: cannot list: {e.strerror or e}") from None
    return [e.name for e in entries if not e.name.startswith(".") and _is_folder(e)]


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a folder (a class or a split); an entry that cannot be told (a loop
    of symbolic links) is not one, and a warning names it, instead of one bad entry stopping
    the whole data set."""
    try:
        return entry.is_dir()
    except OSError as e:
        log.warning("%s: not a class folder, left out (%s)", entry.path, e.strerror or e)
        return False


def _images(folder: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise DataError(f"{folder}: cannot list: {e.strerror or e}") from None
    # Every entry named as an image: a folder, a broken link, a FIFO or an unreadable file is
    # listed, so that evaluate reports it as a failed file (the image reader refuses it without
    # opening anything that could block) rather than leaving it out unseen, as predict does.
    found = [folder / n for n in names if not n.startswith(".") and is_image_name(n)]
    others = [n for n in names if not n.startswith(".") and not is_image_name(n)]
    if others:  # notes, a labels file: not images, but said, so that none goes unseen
        log.info("%s: %d entries not named as images left out, e.g. %s", folder, len(others),
                 escape(others[0]))  # fmt: skip
    if not found:
        raise DataError(
            f"class folder {folder} holds no image file; expected files ending in "
            + ", ".join(IMAGE_EXTENSIONS)
        )
    return found
