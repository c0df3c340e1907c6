"""`predict_on_ray` and `evaluate_on_ray`: the local `predict` and `evaluate` with Ray Data
doing the work, on one machine or a cluster.

The driver lists the files (the local walk's rules; `expand_uris` for URIs) and hands Ray Data a
table of (index, path); an actor pool of `BundlePredictor` reads, decodes and classifies them,
one verified `Classifier` per actor; the rows come back in input order (Ray Data's
``preserve_order``), each index checked, so that a row lost or repeated (an actor killed and its
batch retried) is an error rather than a wrong answer. Ray must be connected first
(`ray_session`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from onnxedge.runtime.bundle.outputs import BINARY_KINDS
from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.classifier.args import check_batch_size, check_count, check_threshold
from onnxedge.runtime.classifier.classifier import DEFAULT_BATCH_SIZE
from onnxedge.runtime.classifier.predictions import FileResult
from onnxedge.runtime.classifier.preprocess import MAX_PIXELS, ImageReadError
from onnxedge.runtime.data import Dataset, open_dataset
from onnxedge.runtime.data.dataset import with_classes
from onnxedge.runtime.data.evaluate import (
    ClassesEvaluation,
    EvaluationResult,
    classes_evaluation_of,
    evaluation_of,
)
from onnxedge.runtime.distributed.connect import cluster_cpus, cluster_gpus, require_ray
from onnxedge.runtime.distributed.listing import expand_uris, is_uri
from onnxedge.runtime.distributed.predictor import ERROR, PATH, BundlePredictor, prediction_of
from onnxedge.runtime.engines import DEFAULT_PRECISION, ONNXRUNTIME, check_precision
from onnxedge.runtime.engines.onnxruntime.session import MAX_THREADS
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.names import name_bytes, text
from onnxedge.runtime.variants.manifest import variant_key

log = logging.getLogger(__name__)

INDEX = "index"
# Rows per block of the listing: Ray Data's unit of scheduling. At least a batch; at most enough
# for 4 blocks per CPU of the cluster, so that every actor has work queued; capped so that a
# retried block (an actor killed) repeats little work.
MAX_ROWS_PER_BLOCK = 4096


def provider_label(provider: str, actors: int, threads: int) -> str:
    """What the summary says ran the model."""
    actors_ = f"{actors} actor{'s' * (actors != 1)}"
    return f"Ray Data: {actors_} x {threads} thread{'s' * (threads != 1)}, provider {provider}"


class RayRun:
    """The settings of one run: the bundle (verified on the driver first, so that a bad bundle is
    one line before any actor starts), the actor pool, and what each actor runs."""

    def __init__(
        self,
        bundle: str | Path,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
        provider: str = "auto",
        threads: int | None = None,
        engine: str = ONNXRUNTIME,
        precision: str = DEFAULT_PRECISION,
        variant: str | None = None,
        max_pixels: int | None = MAX_PIXELS,
        actors: int | None = None,
        bomb_warning_is_error: bool = True,
        predictor: type[BundlePredictor] = BundlePredictor,
    ) -> None:
        self.ray = require_ray()
        if not self.ray.is_initialized():
            raise OnnxEdgeError("Ray is not connected: run inside ray_session() or ray.init()")
        self.bundle = Bundle.open(bundle)
        self.bundle.variant_model(variant)
        check_precision(engine, precision)
        if threshold is not None:
            check_threshold(threshold)
            if self.bundle.output_kind not in BINARY_KINDS:
                raise OnnxEdgeError(
                    f"a threshold applies to a model with one output; this one gives "
                    f"{len(self.bundle.classes)} class probabilities ({self.bundle.output_kind})"
                )
        self.threshold = (
            (self.bundle.threshold if threshold is None else float(threshold))
            if self.bundle.output_kind in BINARY_KINDS
            else None
        )
        self.batch_size = check_batch_size(batch_size)
        self.threads = check_count(threads, "threads", optional=True, maximum=MAX_THREADS) or 1
        # Ray hides the GPUs from an actor that asks for none: with --providers cuda each actor
        # asks for one, and there are as many as the cluster has GPUs.
        self.gpus = 1 if provider == "cuda" else 0
        if self.gpus and not cluster_gpus(self.ray):
            raise OnnxEdgeError(
                "provider cuda on Ray gives each actor a GPU; expected GPUs in the cluster, "
                f"found none ({cluster_cpus(self.ray)} CPUs): use --providers cpu or auto"
            )
        available = cluster_gpus(self.ray) if self.gpus else cluster_cpus(self.ray) // self.threads
        self.actors = check_count(actors, "actors", optional=True) or max(1, available)
        self.provider = provider
        self.predictor = predictor
        self.kwargs: dict[str, Any] = {
            "bundle": str(Path(bundle).resolve()),
            "provider": provider,
            "threads": threads,  # None: the actor's CPUs, which are `self.threads`
            "threshold": self.threshold,
            "engine": engine,
            "precision": precision,
            "variant": variant,
            "batch_size": self.batch_size,
            "max_pixels": max_pixels,
            "bomb_warning_is_error": bomb_warning_is_error,
        }

    @property
    def label(self) -> str:
        return provider_label(self.provider, self.actors, self.threads)

    def dataset(self, items: list[str | ImageReadError]) -> Any:
        """The Ray Data pipeline over ``items``: listing table -> actor pool of predictors."""
        import pyarrow as pa

        ray = self.ray
        # Absolute: an actor's working directory is not the driver's. The rows keep the names
        # as given (`results` takes them from ``items``).
        # As bytes: a name that is not UTF-8 is no pyarrow string (the predictor decodes them).
        paths = [
            name_bytes(os.fspath(i.path) if isinstance(i, ImageReadError) else _absolute(i))
            for i in items
        ]
        # what is wrong with a file already refused (its row takes the reason from ``items``)
        errors = [text(i.reason) if isinstance(i, ImageReadError) else "" for i in items]
        cpus = cluster_cpus(ray)
        per_block = min(
            MAX_ROWS_PER_BLOCK, max(self.batch_size, math.ceil(len(items) / (4 * cpus)))
        )
        tables = [
            pa.table(
                {
                    INDEX: pa.array(range(start, min(start + per_block, len(items))), pa.int64()),
                    PATH: pa.array(paths[start : start + per_block], pa.binary()),
                    ERROR: pa.array(errors[start : start + per_block], pa.string()),
                }
            )
            for start in range(0, len(items), per_block)
        ]
        self.actors = min(self.actors, len(tables))  # an actor without a block would idle
        ds = ray.data.from_arrow(tables)
        ds.context.execution_options.preserve_order = True
        ds.context.enable_progress_bars = log.isEnabledFor(logging.INFO)
        return ds.map_batches(
            self.predictor,
            fn_constructor_kwargs=self.kwargs,
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.threads,
            num_gpus=self.gpus,
            batch_size=self.batch_size,
            # Ray Data's actor pools default to max_restarts=-1 and max_task_retries=-1: an
            # actor whose process dies (killed, out of memory, its node lost) is started again
            # and the batch it held is run again (tests/test_distributed.py kills one).
        )

    def results(self, paths: Iterable[str | ImageReadError]) -> Iterator[FileResult]:
        """One `FileResult` per item of ``paths`` (URIs of directories expanded first), in
        order, streamed as Ray Data gives them."""
        items = list(expand_uris(paths))
        if not items:
            return
        expected = 0
        batches = self.dataset(items).iter_batches(batch_format="numpy", batch_size=None)
        with _ray_errors(self.ray):
            for batch in batches:
                for i, index in enumerate(batch[INDEX]):
                    if int(index) != expected:
                        raise OnnxEdgeError(
                            f"Ray Data returned row {int(index)} where row {expected} was "
                            "expected: a row was lost or repeated"
                        )
                    expected += 1
                    yield self._result(items[int(index)], {k: v[i] for k, v in batch.items()})
        if expected != len(items):
            raise OnnxEdgeError(
                f"Ray Data returned {expected} rows for {len(items)} files: rows were lost"
            )

    def _result(self, item: str | ImageReadError, row: dict[str, Any]) -> FileResult:
        if isinstance(item, ImageReadError):
            return FileResult(file=os.fspath(item.path), error=item.reason)
        name = str(item)
        if row[ERROR]:
            return FileResult(file=name, error=str(row[ERROR]))
        return FileResult(name, prediction_of(row, self.threshold, self.bundle.classes))


def _absolute(path: str) -> str:
    return path if is_uri(path) else os.path.abspath(path)


class _ray_errors:
    """An actor that cannot start (its bundle missing on a node, a provider it lacks) is one
    line: the `OnnxEdgeError` it raised, unwrapped from Ray's error."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> bool:
        if error is None or not isinstance(error, self.ray.exceptions.RayError):
            return False
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, OnnxEdgeError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is not None:
            raise OnnxEdgeError(f"on Ray: {cause}") from None
        return False


def predict_on_ray(
    bundle: str | Path, paths: Iterable[str | ImageReadError], **settings: Any
) -> Iterator[FileResult]:
    """`Classifier.predict_files` on Ray: one `FileResult` per path, in order; ``settings`` are
    `RayRun`'s (``batch_size``, ``threshold``, ``provider``, ``threads``, ``actors``, ...)."""
    return RayRun(bundle, **settings).results(paths)


def evaluate_on_ray(
    bundle: str | Path,
    data: Dataset | str | Path,
    *,
    split: str = "test",
    attribute: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> EvaluationResult | ClassesEvaluation:
    """`evaluate_bundle` on Ray: the same split, classified by `RayRun`, measured by the same
    code (`evaluation_of`; for a K-class model `classes_evaluation_of`, on class folders named
    by its classes)."""
    settings.setdefault("batch_size", 64)
    # A local evaluate leaves PIL's decompression-bomb warning a warning; so does this.
    run = RayRun(bundle, bomb_warning_is_error=False, **settings)
    classes = run.bundle.classes if run.threshold is None else None
    if isinstance(data, Dataset):
        dataset = data if classes is None else with_classes(data, classes)
    else:
        dataset = open_dataset(data, attribute, classes=classes)
    results = run.results([str(p) for p in dataset.split(split).paths])
    common = dict(bundle=bundle, dataset=dataset, split=split, progress=progress)
    common.update(provider=run.label, variant=variant_key(run.kwargs["variant"]))
    if classes is not None:
        return classes_evaluation_of(results, classes=classes, **common)
    return evaluation_of(
        results, bundle_labels=run.bundle.labels, threshold=run.threshold, **common
    )


__all__ = ["RayRun", "evaluate_on_ray", "predict_on_ray", "provider_label"]
