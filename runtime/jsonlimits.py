"""Untrusted JSON read with limits: a manifest, a reference file's metadata or a checkpoint's
metadata comes from whoever wrote the file, so its size and its nesting are bounded before
Python's parser (which recurses once per level and fails deep inside with a RecursionError) sees
it. A file past either limit is one `OnnxEdgeError` line saying which limit and what was found.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.errors import BundleError, OnnxEdgeError, first_line

# The deepest nesting a file of ours has is under 10 levels; 64 leaves room for what users add.
MAX_DEPTH = 64
MAX_BYTES = 16 << 20
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def nesting_depth(data: bytes) -> int:
    """How deeply the arrays and objects of the JSON text ``data`` nest (brackets inside strings
    not counted), without parsing it."""
    bare = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    if bare.size == 0:
        return 0
    step = np.zeros(bare.shape, dtype=np.int64)
    step[(bare == ord("[")) | (bare == ord("{"))] = 1
    step[(bare == ord("]")) | (bare == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def check_limits(
    data: bytes | str,
    source: str | Path,
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    error: type[OnnxEdgeError] = BundleError,
) -> bytes:
    """``data`` as bytes, if it is at most ``max_bytes`` long and nests at most ``max_depth``
    levels; else ``error`` saying which limit it passed."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise error(f"{source}: expected JSON of at most {max_bytes:,} bytes, found {len(raw):,}")
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise error(
            f"{source}: expected JSON nested at most {max_depth} levels deep, found {depth}"
        )
    return raw


def load_json(
    data: bytes | str,
    source: str | Path,
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    error: type[OnnxEdgeError] = BundleError,
) -> Any:
    """``data`` parsed, if it is at most ``max_bytes`` long and nests at most ``max_depth``
    levels; else ``error`` saying which limit it passed."""
    raw = check_limits(data, source, max_bytes=max_bytes, max_depth=max_depth, error=error)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise error(f"cannot read {source}: not JSON: {first_line(e)}") from None


__all__ = ["MAX_BYTES", "MAX_DEPTH", "check_limits", "load_json", "nesting_depth"]
