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
import os
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
    Generation,
    Replaced,
    check_io,
    check_sha256,
    confined,
    external_data_files,
    inline_external_data,
    parse_model,
    regular_file,
    verify_model,
)
from onnxedge.runtime.bundle.write import BundleWriter, atomic_write_bytes
from onnxedge.runtime.errors import BundleError, OnnxEdgeError, found_at
from onnxedge.runtime.jsonlimits import load_json
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
    generation: Generation | None = dataclasses.field(default=None, repr=False, compare=False)

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
        `BundleError` (one line). Everything is read from one generation of the bundle
        (`Generation`): where another run replaces the bundle meanwhile, the reading starts
        again on the new one, a few times at most."""
        if not isinstance(path, (str, os.PathLike)) or os.fspath(path) == "":  # "" would be the cwd
            raise BundleError(f"expected a bundle directory's path, got {path!r}")
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"expected a bundle directory, found {found_at(path)}")
        for _ in range(_OPEN_TRIES - 1):
            try:
                return cls._open(path)
            except Replaced:
                continue
        return cls._open(path)

    @classmethod
    def open_model(cls, path: str | Path, variant: str | None = None) -> tuple[Bundle, bytes]:
        """`open` and `model_bytes` of one generation: where another run replaces the bundle
        between the two, both start again on the new one (a few times at most)."""
        for _ in range(_OPEN_TRIES - 1):
            bundle = cls.open(path)
            try:
                return bundle, bundle.model_bytes(variant)
            except Replaced:
                continue
        bundle = cls.open(path)
        return bundle, bundle.model_bytes(variant)

    @classmethod
    def _open(cls, path: Path) -> Bundle:
        generation = Generation.pin(path)
        manifest_path = path / MANIFEST
        if not manifest_path.exists() and not manifest_path.is_symlink():
            if generation.replaced():
                raise Replaced(f"{path} was replaced while this run read it")
            raise BundleError(
                f"{path} is not a complete bundle: {MANIFEST} is missing "
                "(an export that did not finish, or not a bundle)"
            )
        confined(path, MANIFEST, what="the bundle's manifest is")
        data = generation.read(
            MANIFEST,
            manifest_path,
            limit=MAX_MANIFEST_BYTES,
            why="every bundle has one",
            what="a manifest",
        )
        manifest = load_json(data, manifest_path)
        bundle = cls.from_manifest(path, manifest, source=str(manifest_path))
        bundle = dataclasses.replace(bundle, generation=generation)
        for name in manifest["files"]:  # 1. confinement of every listed path, nothing read yet
            confined(path, name)
        data = bundle.read_bytes(MODEL)  # 2.
        return dataclasses.replace(bundle, external_data=verify_model(bundle, data))  # 2., 3.

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
        path = self.path / entry.file
        data = self.read_bytes(entry.file)
        if entry.format == "onnx":
            model = parse_model(data, path)
            external_data_files(self, model)
            check_io(model, self.variant_input(key), self.output, source=path)
        return path

    def variant_input(self, variant: str | None = None) -> TensorSpec:
        """The input ``variant`` takes: the manifest's ``input``, or the variant's own ``input``
        block (a variant that takes the decoded uint8 pixels, `onnxedge optimize
        --uint8-input`)."""
        entry = self.variants.get(variant_key(variant))
        if entry is None or "input" not in entry.block:
            return self.input
        return TensorSpec.from_manifest(entry.block["input"], f"variants.{entry.name}.input")

    def file(self, name: str) -> Path:
        """The path of a file the manifest lists, confined to the bundle and its sha256
        verified. What reads it by path afterwards may meet another generation: `read_bytes`
        returns the very bytes it verified."""
        self.verify(name)
        return self.path / name

    def verify(self, name: str) -> None:
        """A listed file: inside the bundle (checked first), a regular file, its sha256 the
        manifest's."""
        self.read_bytes(name)

    def read_bytes(self, name: str) -> bytes:
        """The bytes of a listed file, from the generation `open` read the manifest from,
        confined to the bundle and their sha256 the manifest's: the bytes checked are the bytes
        returned."""
        entry = self.manifest["files"].get(name)
        if entry is None:
            raise BundleError(f"{self.path / MANIFEST} lists no {name}")
        real = confined(self.path, name)
        display = self.path / name
        if self.generation is None:  # a Bundle made by `from_manifest`, not `open`
            regular_file(real, display)
            try:
                data = real.read_bytes()
            except OSError as e:
                raise BundleError(f"cannot read {display}: {e.strerror or e}") from None
        else:
            data = self.generation.read(name, display)
        return check_sha256(data, entry["sha256"], display)

    def model_bytes(self, variant: str | None = None) -> bytes:
        """The model of ``variant`` (as `variant_model`) as the bytes to hand the engine: read
        once, verified, and (ONNX) with the verified bytes of its external data inlined, so no
        file is opened again after its check."""
        key = variant_key(variant)
        self.variant_model(variant)  # the checks of the entry, its I/O and external data
        name = MODEL if key == FP32 else self.variants[key].file
        data = self.read_bytes(name)
        if key != FP32 and self.variants[key].format != "onnx":
            return data
        return inline_external_data(self, parse_model(data, self.path / name))


_OPEN_TRIES = 10


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
