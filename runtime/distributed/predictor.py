"""`BundlePredictor`: a bundle's model as a callable class for Ray Data's ``map_batches``, for
users who build their own Ray pipelines, and the actor the ``--ray`` commands run.

::

    import ray
    from onnxedge.runtime.distributed import BundlePredictor

    ds = ray.data.read_binary_files("s3://bucket/photos", include_paths=True)
    ds = ds.map_batches(
        BundlePredictor,
        fn_constructor_kwargs={"bundle": "/shared/smile_cnn"},  # the same path on every node
        compute=ray.data.ActorPoolStrategy(size=8),
        num_cpus=1,  # each actor's CPUs: its ONNX Runtime threads and decoding threads
        batch_size=64,
    )
    ds.write_parquet("s3://bucket/scores")  # path, error, probability, label, positive

Its ``__init__`` runs once per actor: the bundle is opened and verified (`Classifier.from_bundle`)
and its session built with as many threads as the actor has CPUs. Its ``__call__`` maps a batch
dict of numpy arrays to a batch dict, with the local run's preprocessing and numbers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxedge.runtime.bundle.outputs import BINARY_KINDS
from onnxedge.runtime.classifier.classifier import DEFAULT_BATCH_SIZE, Classifier
from onnxedge.runtime.classifier.decode import ordered_map
from onnxedge.runtime.classifier.predictions import Prediction
from onnxedge.runtime.classifier.preprocess import MAX_PIXELS
from onnxedge.runtime.distributed.reading import decode, refuse_decompression_bombs
from onnxedge.runtime.engines import DEFAULT_PRECISION, ONNXRUNTIME

log = logging.getLogger(__name__)

# The input columns, in the order they are looked for: preprocessed arrays, a file's bytes (as
# `ray.data.read_binary_files` gives them), or a path (local, or a URI pyarrow reads).
IMAGE, BYTES, PATH = "image", "bytes", "path"
# Output: "error" ("" when classified), "probability" and "label" (NaN and "" when not); a model
# with one output adds "positive", a K-class model "class_index" (-1) and "probabilities" [N, K].
ERROR, PROBABILITY, LABEL, POSITIVE = "error", "probability", "label", "positive"
CLASS_INDEX, PROBABILITIES = "class_index", "probabilities"


def actor_cpus() -> int | None:
    """The CPUs Ray gave the calling actor or task (at least 1); None outside a Ray worker."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except AssertionError:  # the driver: Ray assigns resources to workers only
        return None
    return max(1, int(cpus)) if cpus else None


class BundlePredictor:
    """A bundle's model over Ray Data batches; one per actor, loaded once.

    1. ``__init__``: `Classifier.from_bundle` (verified; ``provider``, ``engine``, ``precision``,
       ``variant`` as there), with ``threads`` ONNX Runtime threads (None: the CPUs Ray gave this
       actor) and as many decoding threads.
    2. ``__call__(batch)``: the images come from the column ``image`` (float32 [N, C, H, W],
       preprocessed as the manifest says), else ``bytes`` (image files' contents), else ``path``
       (local paths or URIs); those two are decoded and preprocessed as a local run does.
    3. A row whose image cannot be used, or whose model output is not a probability, gets its
       reason in ``error`` and the others go on; a row that arrives with a non-empty ``error`` is
       passed as it is, unread.
    4. Every other column passes through (``image`` and ``bytes`` are dropped), so an index or a
       label travels with its row.
    """

    def __init__(
        self,
        bundle: str,
        *,
        provider: str = "auto",
        threads: int | None = None,
        threshold: float | None = None,
        engine: str = ONNXRUNTIME,
        precision: str = DEFAULT_PRECISION,
        variant: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int | None = MAX_PIXELS,
        bomb_warning_is_error: bool = True,
    ) -> None:
        self.threads = threads or actor_cpus()
        self.classifier = Classifier.from_bundle(
            bundle,
            provider=provider,
            threads=self.threads,
            threshold=threshold,
            engine=engine,
            precision=precision,
            variant=variant,
        )
        self.threshold = self.classifier.threshold
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        if bomb_warning_is_error:
            refuse_decompression_bombs(max_pixels)
        log.info("%r with %s threads", self.classifier, self.threads or "default")

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(batch.values()))) if batch else 0
        errors = [str(e) for e in batch[ERROR]] if ERROR in batch else [""] * n
        images = self._images(batch, errors, n)
        out = {k: v for k, v in batch.items() if k not in (IMAGE, BYTES)}
        out.update(self._predict(images, errors))
        return out

    def _images(
        self, batch: Mapping[str, np.ndarray], errors: list[str], n: int
    ) -> list[np.ndarray | None]:
        """Each row's input array, or None where ``errors`` says why there is none (2., 3.)."""
        if IMAGE in batch:
            arrays = batch[IMAGE]
            return [None if errors[i] else arrays[i] for i in range(n)]
        column = BYTES if BYTES in batch else PATH
        if column not in batch:
            raise KeyError(
                f"expected a column {IMAGE!r}, {BYTES!r} or {PATH!r}, found: {', '.join(batch)}"
            )
        todo = [i for i in range(n) if not errors[i]]
        spec, limit = self.classifier.preprocessing, self.max_pixels
        values = batch[column]
        if column == PATH:  # a path as bytes (`RayRun`'s, for names that are not UTF-8) or str
            values = [os.fsdecode(v) if isinstance(v, bytes) else v for v in values]
        decoded = ordered_map(
            lambda i: decode(values[i], spec, limit),
            todo,
            workers=self.threads or 1,
            ahead=2 * (self.threads or 1),
        )
        images: list[np.ndarray | None] = [None] * n
        for i, image in decoded:
            if isinstance(image, str):
                errors[i] = image
            else:
                images[i] = image
        return images

    def _predict(self, images: list[np.ndarray | None], errors: list[str]) -> dict[str, Any]:
        clf = self.classifier
        predictions: list[Prediction | None] = [None] * len(images)
        rows = [i for i, image in enumerate(images) if image is not None]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            raw = clf._outputs(np.stack([images[i] for i in chunk]), len(chunk))
            for i, result in zip(chunk, clf._prediction_rows(raw, self.threshold), strict=True):
                if isinstance(result, str):
                    errors[i] = result
                else:
                    predictions[i] = result
        k = None if clf.output_kind in BINARY_KINDS else len(clf.classes)
        return prediction_columns(predictions, errors, k)


def prediction_columns(
    predictions: list[Prediction | None], errors: list[str], classes: int | None
) -> dict[str, np.ndarray]:
    """The output columns of rows with these predictions (None where ``errors`` says why);
    ``classes``: K for a K-class model, None for a model with one output."""
    out: dict[str, np.ndarray] = {
        ERROR: np.array(errors, dtype=object),
        PROBABILITY: np.array([np.nan if p is None else p.probability for p in predictions]),
        LABEL: np.array(["" if p is None else p.label for p in predictions], dtype=object),
    }
    if classes is None:
        out[POSITIVE] = np.array([p is not None and bool(p.positive) for p in predictions])
        return out
    out[CLASS_INDEX] = np.array(
        [-1 if p is None else p.class_index for p in predictions], dtype=np.int64
    )
    out[PROBABILITIES] = np.array(
        [[np.nan] * classes if p is None else p.probabilities for p in predictions],
        dtype=np.float64,
    ).reshape(len(predictions), classes)
    return out


def prediction_of(
    row: Mapping[str, Any], threshold: float | None, classes: tuple[str, ...]
) -> Prediction:
    """The `Prediction` a row of `prediction_columns` holds (its ``error`` empty)."""
    if threshold is not None:
        return Prediction(
            probability=float(row[PROBABILITY]),
            positive=bool(row[POSITIVE]),
            label=str(row[LABEL]),
            threshold=threshold,
        )
    return Prediction(
        probability=float(row[PROBABILITY]),
        positive=None,
        label=str(row[LABEL]),
        threshold=None,
        class_index=int(row[CLASS_INDEX]),
        probabilities=tuple(float(p) for p in row[PROBABILITIES]),
        classes=classes,
    )


__all__ = ["BundlePredictor", "actor_cpus", "prediction_columns", "prediction_of"]
