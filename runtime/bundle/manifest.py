"""The bundle's manifest format: its version, the files it names, and the structure of its
``input``/``output``, ``labels`` and ``preprocessing`` blocks.

`onnxedge.runtime.bundle.reader.Bundle.from_manifest` validates a manifest with these checks
(the names of its files among them: relative, confined paths, `check_file_names`); the writer
(`onnxedge.runtime.bundle.write`) stamps the format and serialises the manifest with
`manifest_json`. A change to the format changes this module (and ``FORMAT_VERSION``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import PureWindowsPath
from typing import Any

from onnxedge.runtime.bundle.outputs import BINARY_KINDS
from onnxedge.runtime.classifier.preprocess import RESIZE_MODES
from onnxedge.runtime.errors import BundleError

FORMAT = "onnxedge-bundle"
FORMAT_VERSION = 1
# A bundle with variants (`onnxedge optimize`) is format 2, so that an onnxedge that knows nothing
# of variants refuses it instead of ignoring them; one without stays 1, readable by older ones.
VARIANTS_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)  # what this onnxedge reads; anything newer is refused
MANIFEST = "manifest.json"
MODEL = "model.onnx"
_HEX = frozenset("0123456789abcdef")

# Element types a manifest may state (numpy's names for ONNX's tensor types).
DTYPES = (
    "float32",
    "float64",
    "float16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)


def manifest_json(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the manifest states it; string dims are symbolic."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_manifest(cls, block: Any, what: str) -> TensorSpec:
        try:
            name, shape, dtype = block["name"], block["shape"], block["dtype"]
            if not isinstance(name, str) or dtype not in DTYPES or not isinstance(shape, list):
                raise TypeError
            dims = tuple(d if isinstance(d, str) else _positive_int(d) for d in shape)
        except (KeyError, TypeError, ValueError):
            raise BundleError(
                f"the manifest's {what!r} block: expected name, shape (a list of dims) and dtype "
                f"(one of {', '.join(DTYPES)}), found {block!r}"
            ) from None
        return cls(name=name, shape=dims, dtype=dtype)

    def describe(self) -> str:
        dims = ", ".join("N" if isinstance(d, str) else str(d) for d in self.shape)
        return f"{self.dtype} array of shape [{dims}]"


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(value)
    return value


def check_labels(labels: Any, kind: str, output: TensorSpec, source: str) -> None:
    """One output: a threshold in [0, 1]. K outputs: K distinct class names."""
    if kind in BINARY_KINDS:
        if not isinstance(labels, dict) or not (
            _number(labels.get("threshold")) and 0.0 <= labels["threshold"] <= 1.0
        ):
            raise BundleError(
                f"{source}: expected labels with a threshold in [0, 1], found {labels!r}"
            )
        for side in ("positive", "negative"):  # the words predict prints
            if side in labels and not isinstance(labels[side], str):
                raise BundleError(
                    f"{source}: expected labels' {side} as a class name (text), found "
                    f"{labels[side]!r}"
                )
        return
    classes = output.shape[-1] if output.shape else None
    names = labels.get("classes") if isinstance(labels, dict) else None
    if not (
        isinstance(names, list)
        and all(isinstance(n, str) for n in names)
        and len(set(names)) == len(names) == classes
    ):
        raise BundleError(
            f"{source}: expected labels with {classes} distinct class names for the {kind} "
            f"output, found {labels!r}"
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_format_version(manifest: Mapping[str, Any], source: str) -> None:
    """A format version this onnxedge reads; a newer one is refused with what to do about it."""
    version = manifest.get("format_version")
    readable = f"{READABLE_FORMAT_VERSIONS[0]} to {READABLE_FORMAT_VERSIONS[-1]}"
    if isinstance(version, int) and not isinstance(version, bool):
        if version > READABLE_FORMAT_VERSIONS[-1]:
            raise BundleError(
                f"{source}: expected format_version {readable}, found {version}: the bundle was "
                "written by a newer onnxedge; upgrade onnxedge to read it"
            )
        if version in READABLE_FORMAT_VERSIONS:
            return
    raise BundleError(f"{source}: expected format_version {readable}, found {version!r}")


def check_files(files: Any, source: str) -> None:
    if not isinstance(files, dict) or MODEL not in files:
        raise BundleError(
            f"{source}: expected 'files' mapping each file to its sha256, with {MODEL}; "
            f"found {type(files).__name__ if not isinstance(files, dict) else sorted(files)}"
        )
    check_file_names(files, source)


def check_file_names(files: Mapping[str, Any], source: str) -> None:
    """1.: each name of the manifest's ``files`` is a relative POSIX path inside the bundle, and
    each entry carries a sha256 (64 lowercase hex digits)."""
    for name, entry in files.items():
        problem = name_problem(name)
        if problem:
            raise BundleError(
                f"{source}: files[{name!r}]: expected a relative path inside the bundle, found "
                f"{problem}"
            )
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX):
            raise BundleError(
                f"{source}: files[{name!r}]: expected a sha256 (64 hex digits), found {entry!r}"
            )


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a file inside a bundle, or None when it can."""
    if not isinstance(name, str) or not name:
        return f"{name!r}"
    if "\0" in name:
        return "a NUL byte"
    if name.startswith("/") or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        return "an absolute path"
    if "\\" in name:
        return "a backslash (bundles name files with '/')"
    parts = name.split("/")
    if ".." in parts:
        return "'..'"
    if any(p in ("", ".") for p in parts):
        return "an empty or '.' part"
    return None


def check_preprocessing(spec: Any, source: str) -> Mapping[str, Any]:
    """The structure `onnxedge.runtime.classifier.preprocess` relies on; it checks the values it
    supports."""
    problems = []
    if not isinstance(spec, dict):
        problems.append(f"a mapping, found {spec!r}")
    else:
        resize = spec.get("resize")
        if not (
            isinstance(resize, list)
            and len(resize) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resize)
        ):
            problems.append(f"resize as [height, width], found {resize!r}")
        channels = 1 if spec.get("color", "RGB") == "L" else 3
        what = "one number (grayscale)" if channels == 1 else "three numbers"
        for key, default in (("mean", [0.0] * channels), ("std", [1.0] * channels)):
            value = spec.get(key, default)
            if not (
                isinstance(value, list) and len(value) == channels and all(map(_number, value))
            ):
                problems.append(f"{key} as {what}, found {value!r}")
            elif key == "std" and 0 in value:
                problems.append(f"std without zeros, found {value!r}")
        if spec.get("dtype", "float32") != "float32":  # what preprocess makes, always
            problems.append(f"dtype float32, found {spec.get('dtype')!r}")
        if spec.get("decode", "exact") not in ("exact", "fast"):  # preprocess.DECODES
            problems.append(f"decode exact or fast, found {spec.get('decode')!r}")
        if not _number(spec.get("scale", 1.0 / 255.0)):
            problems.append(f"scale as a number, found {spec.get('scale')!r}")
        fraction = spec.get("crop_fraction", 1.0)
        if not (_number(fraction) and 0 < fraction <= 1):
            problems.append(f"crop_fraction as a number in (0, 1], found {fraction!r}")
        if not _number(spec.get("pad_value", 0.0)):
            problems.append(f"pad_value as a number, found {spec.get('pad_value')!r}")
        if spec.get("resize_mode", "stretch") not in RESIZE_MODES:
            problems.append(
                f"resize_mode one of {', '.join(RESIZE_MODES)}, found {spec.get('resize_mode')!r}"
            )
    if problems:
        raise BundleError(f"{source}: expected preprocessing with {problems[0]}")
    return spec
