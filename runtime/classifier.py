"""The Python API on the device: a bundle's model as a binary image classifier, without torch.

::

    from onnxedge.runtime.classifier import Classifier

    clf = Classifier.from_bundle("build/smile_cnn")  # sha256 verified, provider "auto"
    for p in clf.predict_images(["a.jpg", "b.png"]):
        print(p.probability, p.label)

`Classifier.from_bundle` is the loader (bundle verified, external data confined to the bundle,
session on the requested provider); `predict_array` runs a validated batch; `predict_images` and
`predict_files` preprocess as the manifest says (`onnxedge.runtime.preprocess`). One classifier may
be used from many threads at once: it holds no mutable state, and ONNX Runtime's ``run`` is
thread-safe.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bundle import Bundle, TensorSpec
from onnxedge.runtime.errors import BundleError, OnnxEdgeError, first_line
from onnxedge.runtime.preprocess import (
    MAX_PIXELS,
    ImageReadError,
    load_image,
    preprocess_image,
)
from onnxedge.runtime.session import SessionConfig, available_providers, make_session

log = logging.getLogger(__name__)

PROVIDER_CHOICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's result: ``positive`` is ``probability >= threshold``; ``label`` names it."""

    probability: float
    positive: bool
    label: str
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"probability": self.probability, "label": self.label, "positive": self.positive}


@dataclasses.dataclass(frozen=True)
class FileResult:
    """One file of a batch: its prediction, or why it could not be used. Truthy when predicted."""

    file: str
    prediction: Prediction | None = None
    error: str | None = None

    def __bool__(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.prediction is None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, **self.prediction.to_dict()}


def _label_names(labels: Mapping[str, Any]) -> tuple[str, str]:
    return str(labels.get("positive", "positive")), str(labels.get("negative", "negative"))


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"expected a threshold in [0, 1], got {threshold!r}")
    return value


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"expected a batch size of at least 1, got {batch_size}")


class Classifier:
    """A verified bundle's model on one ONNX Runtime execution provider.

    Build it with `from_bundle`. Attributes: ``provider`` (the ONNX Runtime provider it runs on),
    ``input_spec``/``output_spec`` (`TensorSpec`), ``preprocessing`` and ``labels`` (from the
    manifest), ``threshold`` (the default for `Prediction.positive`).
    """

    def __init__(
        self,
        session: Any,
        manifest: Mapping[str, Any],
        *,
        provider: str,
        threshold: float | None = None,
        path: Path | None = None,
    ) -> None:
        self.session = session
        self.manifest = manifest
        self.path = path
        self.provider = provider
        spec = Bundle.from_manifest(path or Path("."), manifest)  # validated, as in Bundle.open
        self.input_spec: TensorSpec = spec.input
        self.output_spec: TensorSpec = spec.output
        self.preprocessing: Mapping[str, Any] = spec.preprocessing
        self.labels: Mapping[str, Any] = spec.labels
        self.threshold = _check_threshold(spec.threshold if threshold is None else threshold)
        self._check_session()

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        provider: str = "auto",
        threads: int | None = None,
        *,
        threshold: float | None = None,
    ) -> Classifier:
        """Open a bundle and build its session.

        1. `Bundle.open` verifies the manifest and the sha256 of ``model.onnx``.
        2. Every tensor stored as ONNX external data must lie inside the bundle directory (no
           absolute paths, no ``..``, no symlink out) and be listed, and verified, in the manifest.
        3. ``provider``: ``cpu``, ``cuda`` (an error naming the available providers when the CUDA
           EP cannot load), or ``auto`` (CUDA when it loads, else CPU). ``threads``: ONNX Runtime's
           intra-op threads (None: one per physical core).
        """
        bundle = Bundle.open(path)
        check_external_data(bundle)
        session, used = _session_for(bundle.model_path, provider, threads)
        log.info("%s runs on %s", bundle.path, used)
        return cls(session, bundle.manifest, provider=used, threshold=threshold, path=bundle.path)

    def _check_session(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if self.input_spec.name not in inputs or len(inputs) != 1:
            raise BundleError(
                f"the manifest's input {self.input_spec.name!r} does not match the model's "
                f"inputs: {', '.join(inputs) or 'none'}"
            )
        if self.output_spec.name not in outputs:
            raise BundleError(
                f"the manifest's output {self.output_spec.name!r} does not match the model's "
                f"outputs: {', '.join(sorted(outputs)) or 'none'}"
            )

    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, provider={self.provider!r})"

    # -- arrays -------------------------------------------------------------------------------

    def validate(self, batch: Any) -> np.ndarray:
        """``batch`` if it is what the model takes, else a `ValueError` naming the spec and it."""
        spec = self.input_spec
        expected = f"expected a {spec.describe()} (input {spec.name!r})"
        if not isinstance(batch, np.ndarray):
            raise ValueError(f"{expected}, got a {type(batch).__name__}, not a numpy array")
        found = f"{batch.dtype} array of shape {list(batch.shape)}"
        if batch.ndim != len(spec.shape):
            raise ValueError(f"{expected}, got a {found} (rank {batch.ndim})")
        for axis, (want, have) in enumerate(zip(spec.shape, batch.shape, strict=True)):
            if isinstance(want, int) and want != have:
                raise ValueError(f"{expected}, got a {found} (axis {axis} is {have})")
        if batch.dtype != np.dtype(spec.dtype):
            raise ValueError(f"{expected}, got a {found}")
        if batch.size and not np.isfinite(batch).all():
            nan = int(np.isnan(batch).sum())
            inf = int(np.isinf(batch).sum())
            raise ValueError(
                f"{expected} with finite values, got {nan} NaN and {inf} inf values in a {found}"
            )
        return np.ascontiguousarray(batch)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for a validated batch, one probability per image: float64 [N]."""
        batch = self.validate(batch)
        if batch.shape[0] == 0:
            return np.zeros((0,), dtype=np.float64)
        (out,) = self.session.run([self.output_spec.name], {self.input_spec.name: batch})
        out = np.asarray(out)
        if out.shape != (batch.shape[0], 1):
            raise OnnxEdgeError(
                f"the model's output {self.output_spec.name!r}: expected shape "
                f"[{batch.shape[0]}, 1], found {list(out.shape)}"
            )
        return out[:, 0].astype(np.float64)

    def predict_array(self, batch: np.ndarray, threshold: float | None = None) -> list[Prediction]:
        """Predictions for a preprocessed batch, float32 [N, 3, 64, 64] (as the manifest says).

        A wrong rank, shape or dtype, or a NaN/inf value, is a `ValueError` naming the expected
        spec and what it got; an empty batch gives an empty list without running the model.
        """
        threshold = self.threshold if threshold is None else _check_threshold(threshold)
        return [self._prediction(p, threshold) for p in self.probabilities(batch)]

    def _prediction(self, probability: float, threshold: float) -> Prediction:
        positive_name, negative_name = _label_names(self.labels)
        positive = bool(probability >= threshold)
        return Prediction(
            probability=float(probability),
            positive=positive,
            label=positive_name if positive else negative_name,
            threshold=threshold,
        )

    # -- images -------------------------------------------------------------------------------

    def preprocess(self, image: Any, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
        """A file path or a PIL image -> float32 [3, H, W] as the manifest's preprocessing says."""
        if isinstance(image, (str, bytes, os.PathLike)):
            return load_image(image, self.preprocessing, max_pixels=max_pixels)
        if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
            return preprocess_image(image, self.preprocessing)
        raise TypeError(f"expected a file path or a PIL image, got {type(image).__name__}")

    def predict_images(
        self,
        images: Iterable[Any],
        threshold: float | None = None,
        *,
        batch_size: int = 32,
        max_pixels: int | None = MAX_PIXELS,
    ) -> list[Prediction]:
        """Predictions for file paths and/or PIL images, in order.

        A file that is not a usable image raises `ImageReadError` (an `OnnxEdgeError`) naming it;
        `predict_files` reports such files one by one instead.
        """
        threshold = self.threshold if threshold is None else _check_threshold(threshold)
        _check_batch_size(batch_size)
        results: list[Prediction] = []
        chunk: list[np.ndarray] = []
        for image in images:
            chunk.append(self.preprocess(image, max_pixels=max_pixels))
            if len(chunk) >= batch_size:
                results += self.predict_array(np.stack(chunk), threshold)
                chunk = []
        if chunk:
            results += self.predict_array(np.stack(chunk), threshold)
        return results

    def predict_files(
        self,
        paths: Iterable[str | Path | ImageReadError],
        *,
        batch_size: int = 32,
        threshold: float | None = None,
        max_pixels: int | None = MAX_PIXELS,
    ) -> Iterator[FileResult]:
        """One `FileResult` per path, in order, streamed: ``paths`` is consumed lazily and at most
        ``batch_size`` preprocessed images are held at once, however many paths there are.

        A file that cannot be used gets a result with its ``error`` and the others go on; an item
        that is already an `ImageReadError` (a directory `find_images` could not list) passes
        through as such a result, in its place.
        """
        _check_batch_size(batch_size)
        threshold = self.threshold if threshold is None else _check_threshold(threshold)
        pending: list[tuple[str, np.ndarray | str]] = []
        for path in paths:
            if isinstance(path, ImageReadError):
                pending.append((os.fspath(path.path), path.reason))
            else:
                try:
                    image = load_image(path, self.preprocessing, max_pixels=max_pixels)
                    pending.append((os.fspath(path), image))
                except ImageReadError as e:
                    pending.append((os.fspath(path), e.reason))
            if len(pending) >= batch_size:
                yield from self._run_pending(pending, threshold)
                pending = []
        if pending:
            yield from self._run_pending(pending, threshold)

    def _run_pending(
        self, pending: Sequence[tuple[str, np.ndarray | str]], threshold: float
    ) -> Iterator[FileResult]:
        arrays = [a for _, a in pending if isinstance(a, np.ndarray)]
        predictions = iter(self.predict_array(np.stack(arrays), threshold) if arrays else [])
        for name, item in pending:
            if isinstance(item, np.ndarray):
                yield FileResult(file=name, prediction=next(predictions))
            else:
                yield FileResult(file=name, error=item)


# -- loading ------------------------------------------------------------------------------------


def _session_for(model: Path, provider: str, threads: int | None) -> tuple[Any, str]:
    """(session, provider name used) for ``provider`` in `PROVIDER_CHOICES`."""
    key = provider.strip().lower()
    if key not in PROVIDER_CHOICES:
        raise OnnxEdgeError(
            f"unknown provider {provider!r}; expected one of: {', '.join(PROVIDER_CHOICES)}"
        )
    if key == "auto":
        if "CUDAExecutionProvider" in available_providers():
            try:
                session = make_session(model, SessionConfig(provider="cuda", threads=threads))
                return session, "CUDAExecutionProvider"
            except OnnxEdgeError as e:
                log.info("provider auto: the CUDA EP did not load (%s); using the CPU", e)
        key = "cpu"
    session = make_session(model, SessionConfig(provider=key, threads=threads))
    return session, session.get_providers()[0]


def check_external_data(bundle: Bundle) -> list[str]:
    """Refuse ONNX external data outside the bundle; verify what is inside against the manifest.

    Reads the model without its external data and looks at every tensor (initializers, sparse
    initializers, tensor attributes, in subgraphs too). Returns the external files it verified.
    """
    import onnx

    try:
        model = onnx.load(str(bundle.model_path), load_external_data=False)
    except Exception as e:
        raise BundleError(
            f"{bundle.model_path} is not an ONNX model: protobuf says: {first_line(e)}"
        ) from None
    root = bundle.path.resolve()
    verified: list[str] = []
    for tensor in _model_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        where = f"{bundle.model_path}: tensor {tensor.name!r} stores its data externally"
        if not location:
            raise BundleError(f"{where}, but names no location")
        if os.path.isabs(location) or Path(location).is_absolute() or location.startswith("\\"):
            raise BundleError(
                f"{where} at the absolute path {location!r}; expected a file inside the bundle"
            )
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise BundleError(
                f"{where} at {location!r}, which resolves to {target}, outside the bundle "
                f"{root}; refusing to read it"
            )
        name = target.relative_to(root).as_posix()
        if name not in verified:
            if name not in bundle.manifest.get("files", {}):
                raise BundleError(
                    f"{where} in {name!r}, which the manifest does not list, so its sha256 "
                    "cannot be verified"
                )
            bundle.verify(name)
            verified.append(name)
    return verified


def _model_tensors(model: Any) -> Iterator[Any]:
    yield from _all_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _all_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Iterator[Any]:
    import onnx

    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_tensors(sub)


__all__ = [
    "PROVIDER_CHOICES",
    "Classifier",
    "FileResult",
    "Prediction",
    "TensorSpec",
    "check_external_data",
]
