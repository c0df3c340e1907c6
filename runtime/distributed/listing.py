"""Files behind URIs (``s3://bucket/photos``, ``gs://...``, ``file:///...``) that pyarrow's
filesystems read, listed by the rules of a local walk
(`onnxedge.runtime.classifier.files.find_images`) so that a run over a URI gives the files, and
the order, of the same tree on a local disk."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from onnxedge.runtime.classifier.preprocess import ImageReadError, is_image_name
from onnxedge.runtime.errors import first_line

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: Any) -> bool:
    """Whether ``path`` names a file through a URI scheme rather than a local path."""
    return isinstance(path, str) and bool(_SCHEME.match(path))


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, the path on it) for a URI; an `ImageReadError` where pyarrow has no
    filesystem for it (an unknown scheme, a missing optional component)."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError, ImportError) as e:
        raise ImageReadError(uri, f"pyarrow cannot open this filesystem: {first_line(e)}") from None


def expand_uris(
    items: Iterable[str | ImageReadError],
) -> Iterator[str | ImageReadError]:
    """``items`` with each URI of a directory replaced by the image files under it; other items
    (local paths, URIs of files or of nothing) pass as they are. Under a directory:

    1. entries whose name starts with ``.`` are skipped, with everything under them;
    2. a file is taken when its name ends in an image extension (any case); a directory named
       like an image is yielded itself (so that it is reported) and not entered;
    3. the order is a local walk's: in each directory its files (name order), then its
       subdirectories (name order), each entered in turn;
    4. a directory that cannot be listed is an `ImageReadError` in its place.
    """
    for item in items:
        if isinstance(item, str) and is_uri(item):
            yield from _expand(item)
        else:
            yield item


def _expand(uri: str) -> Iterator[str | ImageReadError]:
    from pyarrow import fs

    try:
        filesystem_, root = filesystem(uri)
        info = filesystem_.get_file_info(root)
        if info.type != fs.FileType.Directory:
            yield uri
            return
        entries = filesystem_.get_file_info(fs.FileSelector(root, recursive=True))
    except ImageReadError as e:
        yield e
        return
    except OSError as e:  # 4.
        yield ImageReadError(uri, f"cannot list the directory: {first_line(e)}")
        return
    prefix = uri.rstrip("/") + "/"
    base = root.rstrip("/") + "/"
    chosen: list[tuple[tuple[tuple[int, str], ...], str]] = []
    image_dirs: list[tuple[str, ...]] = []
    for entry in entries:
        parts = tuple(entry.path[len(base) :].split("/"))
        if any(p.startswith(".") for p in parts):  # 1.
            continue
        is_dir = entry.type == fs.FileType.Directory
        if not is_image_name(parts[-1]) or (not is_dir and entry.type != fs.FileType.File):
            continue
        if is_dir:  # 2.: yielded, and what lies under it is not
            image_dirs.append(parts)
        chosen.append((_walk_key(parts), prefix + "/".join(parts)))
    for _, name in sorted(chosen):  # 3.
        parts = tuple(name[len(prefix) :].split("/"))
        if not any(parts[: len(d)] == d and len(parts) > len(d) for d in image_dirs):
            yield name


def _walk_key(parts: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
    """Sorts as a local walk yields: at each level, entries taken as files (0) before the
    subdirectories (1) entered, each group by name."""
    return (*((1, p) for p in parts[:-1]), (0, parts[-1]))


__all__ = ["expand_uris", "filesystem", "is_uri"]
