"""CelebA's layout: ``img_align_celeba/``, ``list_attr_celeba.txt``, ``list_eval_partition.txt``.

The attribute file: a line with the image count, a line with the 40 attribute names, then one line
per image, ``FILE v1 ... v40`` with values 1 or -1. The partition file: ``FILE 0|1|2`` per line for
train, val and test. Both are whitespace-separated (CelebA pads ``1`` to `` 1``).

`read_celeba` checks, and refuses with one line naming the file and the line:

1. a missing directory or file of the three;
2. an attribute file whose count line is not a number or does not match its rows, an attribute
   named twice, a row with the wrong number of fields or a value other than 1 / -1 (written so:
   not ``01``), a file listed twice;
3. an unknown attribute (the message lists the known ones, and a close match first);
4. a partition line that is not ``FILE 0|1|2``, a file listed twice, an image it names that the
   attribute file does not list or that is not in ``img_align_celeba/``;
5. an attribute with one value for every image (a single class) or a split with no image.

Images in the attribute file but not in the partition file are left out (logged at info, `-v`);
files on disk that neither lists are not read, and not counted.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path

from onnxedge.runtime.data.dataset import SPLITS, DataError, Dataset, Split
from onnxedge.runtime.errors import found_at

log = logging.getLogger(__name__)

IMAGES = "img_align_celeba"
ATTRIBUTES = "list_attr_celeba.txt"
PARTITION = "list_eval_partition.txt"
DEFAULT_ATTRIBUTE = "Smiling"
_SHOWN = 3  # file names an error message lists before "and N more"


def is_celeba(root: Path) -> bool:
    """Whether ``root`` holds any of CelebA's three entries (then it is read as CelebA)."""
    return any((root / name).exists() for name in (IMAGES, ATTRIBUTES, PARTITION))


def class_names(attribute: str) -> tuple[str, str]:
    """("not smiling", "smiling") for ``Smiling``: index 0 is -1, index 1 is 1."""
    name = attribute.replace("_", " ").lower()
    return f"not {name}", name


def read_celeba(root: str | Path, attribute: str | None = None) -> Dataset:
    """Read CelebA's layout under ``root`` with ``attribute`` (default ``Smiling``) as the label."""
    root = Path(root)
    attribute = DEFAULT_ATTRIBUTE if attribute is None else attribute
    images = _images_dir(root)
    for name in (ATTRIBUTES, PARTITION):
        if not (root / name).is_file():
            raise DataError(
                f"{root}: CelebA's layout needs {IMAGES}/, {ATTRIBUTES} and {PARTITION}; "
                f"{name} is missing"
            )
    names, rows = _read_attributes(root / ATTRIBUTES)
    if attribute not in names:
        close = difflib.get_close_matches(attribute, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        raise DataError(f"unknown attribute {attribute!r}{hint}; {ATTRIBUTES} has: {listed}")
    column = names.index(attribute)
    partition = _read_partition(root / PARTITION)

    unlisted = [f for f in partition if f not in rows]
    if unlisted:
        raise DataError(
            f"{PARTITION} names {_some(unlisted)}, which {ATTRIBUTES} does not list; expected "
            "every partitioned image to have attributes"
        )
    on_disk = set(os.listdir(images))
    missing = [f for f in partition if f not in on_disk]
    if missing:
        raise DataError(
            f"{PARTITION} names {_some(missing)}, not found in {images}; expected every "
            "partitioned image to be there"
        )
    left_out = len(rows) - len(partition)
    if left_out:
        log.info("%d images in %s are not in %s: left out", left_out, ATTRIBUTES, PARTITION)

    per_split: dict[int, tuple[list[Path], list[int]]] = {code: ([], []) for code in range(3)}
    for file, code in partition.items():
        paths, labels = per_split[code]
        paths.append(images / file)
        labels.append(1 if rows[file][column] > 0 else 0)
    values = {label for _, labels in per_split.values() for label in labels}
    if len(values) < 2:
        value = "1" if values == {1} else "-1"
        raise DataError(
            f"attribute {attribute!r} is {value} for every partitioned image in {ATTRIBUTES}; "
            "expected both 1 and -1 (two classes)"
        )
    splits = {}
    for code, split in enumerate(SPLITS):
        paths, labels = per_split[code]
        if not paths:
            raise DataError(f"{PARTITION} puts no image in {split} (code {code}); expected some")
        splits[split] = Split(split, tuple(paths), tuple(labels))
    return Dataset(
        root=root,
        layout="celeba",
        class_names=class_names(attribute),
        splits=splits,
        attribute=attribute,
    )


def _images_dir(root: Path) -> Path:
    images = root / IMAGES
    if not images.is_dir():
        raise DataError(
            f"{root}: CelebA's layout needs the directory {IMAGES}/; found {found_at(images)}"
        )
    nested = images / IMAGES  # the archive unpacked into a folder of its own name
    if nested.is_dir() and not any(n.endswith(".jpg") for n in os.listdir(images)):
        return nested
    return images


# An attribute's values as CelebA writes them (and "+1"); nothing else is read as one of them.
_VALUES = {"1": 1, "+1": 1, "-1": -1}


def _read_attributes(path: Path) -> tuple[list[str], dict[str, list[int]]]:
    lines = _read_lines(path)
    if len(lines) < 2:
        raise DataError(
            f"{path}: expected a count line and a line of attribute names, found "
            f"{len(lines)} line(s)"
        )
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DataError(
            f"{path} line 1: expected the number of images, found {lines[0].strip()[:40]!r}"
        ) from None
    names = lines[1].split()
    if not names:
        raise DataError(f"{path} line 2: expected the attribute names, found an empty line")
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:  # which column labels the images would be a guess
        raise DataError(f"{path} line 2: expected each attribute once, found {twice!r} twice")
    rows: dict[str, list[int]] = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise DataError(
                f"{path} line {number}: expected a file name and {len(names)} values, found "
                f"{len(fields)} field(s)"
            )
        file, *values = fields
        if file in rows:
            raise DataError(f"{path} line {number}: {file} is listed twice")
        bad = next((v for v in values if v not in _VALUES), None)  # not int(): "01", "١"
        if bad is not None:
            raise DataError(
                f"{path} line {number}: expected attribute values 1 or -1, found {bad!r}"
            )
        rows[file] = [_VALUES[v] for v in values]
    if count != len(rows):
        raise DataError(f"{path}: line 1 says {count} images, the file lists {len(rows)}")
    return names, rows


def _read_partition(path: Path) -> dict[str, int]:
    partition: dict[str, int] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(
                f"{path} line {number}: expected 'FILE 0|1|2' (train, val, test), found "
                f"{line.strip()[:60]!r}"
            )
        if fields[0] in partition:
            raise DataError(f"{path} line {number}: {fields[0]} is listed twice")
        partition[fields[0]] = int(fields[1])
    if not partition:
        raise DataError(f"{path}: expected lines 'FILE 0|1|2', found none")
    return partition


def _read_lines(path: Path) -> list[str]:
    try:
        # a BOM is no field; lines end at \n, \r\n or \r only (a form feed is not one)
        return path.read_text(encoding="utf-8-sig").split("\n")  # \r\n, \r read as \n
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: expected a text file, found bytes that are not UTF-8 ({e.reason})"
        ) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None


def _some(files: list[str]) -> str:
    shown = ", ".join(files[:_SHOWN])
    more = len(files) - _SHOWN
    return f"{len(files)} image(s) ({shown}{f' and {more} more' if more > 0 else ''})"
