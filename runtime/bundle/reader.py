"""The bundle: a directory with ``model.onnx``, ``manifest.json`` and the files the manifest lists.

A bundle is complete exactly when its ``manifest.json`` exists: `BundleWriter` builds the directory
under a temporary name beside the target, writes the manifest last and renames the directory into
place, so an export that fails or is killed midway never leaves a directory that looks complete
(`onnxedge.runtime.bundle.write`; the manifest's format is `onnxedge.runtime.bundle.manifest`).

`Bundle.open` is the one way in: every command and the `Classifier` go through it, and it verifies,
before anything runs,

1. that every path the manifest names is a relative path that resolves inside the bundle (no
   ``..``, no absolute path, no symlink that leaves it), before any of them is opened or hashed;
2. the sha256 of ``model.onnx`` and of every external-data file it uses, each of which must be
   listed in the manifest (`onnxedge.runtime.bundle.verify`);
3. that the model's input and output (names, element types, ranks, static dims) are the ones the
   manifest states.

Other listed files (``golden.npz``) are verified when they are used (`Bundle.file`). Messages name
files outside the bundle by path only: nothing outside is read, so neither its contents nor its
hashes can appear in them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle.manifest import (
    DTYPES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MODEL,
    READABLE_FORMAT_VERSIONS,
    VARIANTS_FORMAT_VERSION,
    TensorSpec,
    check_files,
    check_format_version,
    check_labels,
    check_preprocessing,
    manifest_json,
)
from onnxedge.runtime.bundle.outputs import SIGMOID_PROBABILITY, manifest_kind
from onnxedge.runtime.bundle.verify import (
    check_io,
    confined,
    external_data_files,
    read_model,
    regular_file,
    verify_model,
    verify_sha256,
)
from onnxedge.runtime.bundle.write import BundleWriter, atomic_write_bytes
from onnxedge.runtime.errors import BundleError, OnnxEdgeError
from onnxedge.runtime.variants.manifest import FP32, VariantEntry, read_variants, variant_key

# A manifest is a few kilobytes; anything far larger is not one (and is not read into memory).
MAX_MANIFEST_BYTES = 16 << 20


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A bundle on disk, opened with `open`: its manifest validated, every path it names confined
    to the directory, ``model.onnx`` and its external data verified against their sha256 and its
    input and output against the manifest. Other files are verified by `file` when used.

    ``input``/``output`` are the manifest's `TensorSpec`s, ``output_kind`` what the output holds
    (`onnxedge.runtime.bundle.outputs`), ``labels`` its labels (one output: a ``threshold`` in [0,
    1];
    K outputs: K ``classes``), ``preprocessing`` what `onnxedge.runtime.classifier.preprocess`
    applies, and
    ``external_data`` the external-data files the model uses (verified).
    """

    path: Path
    manifest: Mapping[str, Any]
    input: TensorSpec
    output: TensorSpec
    labels: Mapping[str, Any]
    preprocessing: Mapping[str, Any]
    external_data: tuple[str, ...] = ()
    variants: Mapping[str, VariantEntry] = dataclasses.field(default_factory=dict)
    output_kind: str = SIGMOID_PROBABILITY

    @property
    def threshold(self) -> float:
        if "threshold" not in self.labels:
            raise BundleError(
                f"{self.path}: a {self.output_kind} model has class names, not a threshold"
            )
        return float(self.labels["threshold"])

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names: K of them, or (negative, positive) for one output."""
        if "classes" in self.labels:
            return tuple(self.labels["classes"])
        return (
            str(self.labels.get("negative", "negative")),
            str(self.labels.get("positive", "positive")),
        )

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        """The one reader: the checks of the module docstring, in that order; any failure is a
        `BundleError` (one line)."""
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"expected a bundle directory, found no directory at {path}")
        manifest_path = path / MANIFEST
        if not manifest_path.exists() and not manifest_path.is_symlink():
            raise BundleError(
                f"{path} is not a complete bundle: {MANIFEST} is missing "
                "(an export that did not finish, or not a bundle)"
            )
        real = confined(path, MANIFEST, what="the bundle's manifest is")
        size = regular_file(real, manifest_path, why="every bundle has one").st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(
                f"{manifest_path}: expected a manifest of at most {MAX_MANIFEST_BYTES:,} bytes, "
                f"found {size:,}"
            )
        try:
            manifest = json.loads(real.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"cannot read {manifest_path}: {e}") from None
        bundle = cls.from_manifest(path, manifest, source=str(manifest_path))
        for name in manifest["files"]:  # 1. confinement of every listed path, nothing read yet
            confined(path, name)
        bundle.verify(MODEL)  # 2.
        return dataclasses.replace(bundle, external_data=verify_model(bundle))  # 2. and 3.

    @classmethod
    def from_manifest(cls, path: Path, manifest: Any, *, source: str = MANIFEST) -> Bundle:
        """Validate a manifest's structure (the file names lexically; `open` checks them on
        disk); each failure names the field, what was expected and what was found."""
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        if not isinstance(manifest, dict) or found != FORMAT:
            raise BundleError(
                f"{source} is not an onnxedge manifest: expected format {FORMAT!r}, found {found!r}"
            )
        check_format_version(manifest, source)
        check_files(manifest.get("files"), source)
        variants = read_variants(manifest, source, manifest["files"])
        if variants and manifest["format_version"] < VARIANTS_FORMAT_VERSION:
            raise BundleError(
                f"{source}: lists variants but has format_version {manifest['format_version']}; "
                f"expected {VARIANTS_FORMAT_VERSION} for a bundle with variants"
            )
        output = TensorSpec.from_manifest(manifest.get("output"), "output")
        try:
            kind = manifest_kind(manifest.get("output"))
        except OnnxEdgeError as e:
            raise BundleError(f"{source}: {e}") from None
        labels = manifest.get("labels")
        check_labels(labels, kind, output, source)
        return cls(
            path=path,
            manifest=manifest,
            input=TensorSpec.from_manifest(manifest.get("input"), "input"),
            output=output,
            labels=labels,
            preprocessing=check_preprocessing(manifest.get("preprocessing"), source),
            output_kind=kind,
            variants=variants,
        )

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    def variant_model(self, variant: str | None = None) -> Path:
        """The model file of ``variant`` (None or ``fp32``: ``model.onnx``, verified by `open`),
        verified before it is returned: listed with its sha256 and matching it, inside the
        bundle, and (ONNX files) its external data verified and its input and output the
        manifest's. An unknown name is an error naming the variants the bundle has."""
        key = variant_key(variant)
        if key == FP32:
            return self.model_path
        entry = self.variants.get(key)
        if entry is None:
            have = ", ".join([FP32, *self.variants])
            raise BundleError(f"{self.path} has no {key!r} variant; it has: {have}")
        path = self.file(entry.file)
        if entry.format == "onnx":
            model = read_model(path)
            external_data_files(self, model)
            check_io(model, self.input, self.output, source=path)
        return path

    def file(self, name: str) -> Path:
        """The path of a file the manifest lists, confined to the bundle and its sha256
        verified."""
        self.verify(name)
        return self.path / name

    def verify(self, name: str) -> None:
        """A listed file: inside the bundle (checked first), a regular file, its sha256 the
        manifest's."""
        entry = self.manifest["files"].get(name)
        if entry is None:
            raise BundleError(f"{self.path / MANIFEST} lists no {name}")
        verify_sha256(confined(self.path, name), entry["sha256"], self.path / name)


__all__ = [
    "DTYPES",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "MODEL",
    "READABLE_FORMAT_VERSIONS",
    "VARIANTS_FORMAT_VERSION",
    "Bundle",
    "BundleWriter",
    "TensorSpec",
    "atomic_write_bytes",
    "manifest_json",
]
