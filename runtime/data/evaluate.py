"""How well a bundle's model classifies a labelled split, measured where it runs: ONNX Runtime, no
torch.

`evaluate_bundle` reads the split (`onnxedge.runtime.data`), classifies its files with
`Classifier.predict_files` (the device's preprocessing and batching, nothing of its own) and
returns an `EvaluationResult`: accuracy, precision, recall, the confusion matrix, ROC AUC, images
per class, and every file that could not be used with the reason. A bad image is counted and
reported, never fatal; the metrics are over the images that were classified.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bundle.outputs import BINARY_KINDS
from onnxedge.runtime.classifier.args import check_threshold
from onnxedge.runtime.classifier.classifier import Classifier
from onnxedge.runtime.classifier.predictions import FileResult
from onnxedge.runtime.classifier.preprocess import MAX_PIXELS
from onnxedge.runtime.data import Dataset, open_dataset
from onnxedge.runtime.data.dataset import with_classes
from onnxedge.runtime.names import json_name, json_safe, text

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FailedFile:
    file: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {**json_name(self.file), "reason": text(self.reason)}


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Binary classification metrics of one split; ``None`` where a metric is undefined (no
    predicted positive for precision, one class only for ROC AUC).

    ``confusion`` is ``[[tn, fp], [fn, tp]]``: rows are the true class (negative, positive),
    columns the predicted one.
    """

    bundle: str
    split: str
    data: dict[str, Any]  # root, layout, attribute, listing_sha256
    class_names: tuple[str, str]  # negative, positive
    bundle_labels: tuple[str, str]  # the bundle's negative and positive label names
    threshold: float
    provider: str
    images: dict[str, int]  # images listed per class
    evaluated: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    confusion: tuple[tuple[int, int], tuple[int, int]]
    roc_auc: float | None
    failed: tuple[FailedFile, ...]
    variant: str = "fp32"  # which of the bundle's models (`onnxedge optimize` adds variants)
    decode: str = "exact"  # how the files became pixels: `DECODES` of classifier/preprocess.py

    def __bool__(self) -> bool:
        """True when every listed image was classified."""
        return not self.failed

    @property
    def labels_match(self) -> bool:
        return tuple(n.lower() for n in self.bundle_labels) == tuple(
            n.lower() for n in self.class_names
        )

    def to_dict(self) -> dict[str, Any]:
        (tn, fp), (fn, tp) = self.confusion
        return {
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "roc_auc": self.roc_auc,
            "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp, "matrix": [[tn, fp], [fn, tp]]},
            "images": self.images,
            "evaluated": self.evaluated,
            "failed": [f.to_dict() for f in self.failed],
            "split": self.split,
            "class_names": json_safe(list(self.class_names)),
            "bundle_labels": json_safe(list(self.bundle_labels)),
            "threshold": self.threshold,
            "bundle": text(self.bundle),
            "provider": self.provider,
            "variant": self.variant,
            "decode": self.decode,
            "data": json_safe(self.data),
        }


@dataclasses.dataclass(frozen=True)
class ClassesEvaluation:
    """Top-1 metrics of a K-class model (K logits or softmax probabilities) on one split.

    ``confusion[i][j]``: images of true class i predicted as class j, over the bundle's classes
    in its order (`class_names`); ``images``: the images listed per class that has any.
    """

    bundle: str
    split: str
    data: dict[str, Any]
    class_names: tuple[str, ...]
    provider: str
    images: dict[str, int]
    evaluated: int
    accuracy: float | None
    confusion: tuple[tuple[int, ...], ...]
    failed: tuple[FailedFile, ...]
    variant: str = "fp32"

    def __bool__(self) -> bool:
        return not self.failed

    def per_class_recall(self) -> dict[str, float]:
        """Of each class with images, the share predicted as itself."""
        return {
            name: self.confusion[i][i] / total
            for i, name in enumerate(self.class_names)
            if (total := sum(self.confusion[i]))
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "per_class_recall": json_safe(self.per_class_recall()),
            "confusion": {
                "classes": json_safe(list(self.class_names)),
                "matrix": [list(row) for row in self.confusion],
            },
            "images": json_safe(self.images),
            "evaluated": self.evaluated,
            "failed": [f.to_dict() for f in self.failed],
            "split": self.split,
            "class_names": json_safe(list(self.class_names)),
            "bundle": text(self.bundle),
            "provider": self.provider,
            "variant": self.variant,
            "data": json_safe(self.data),
        }


def roc_auc(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float | None:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative, ties counting one half (the Mann-Whitney U statistic). None with one class only."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Ranks from 1; tied scores share the mean of the ranks they span.
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = mean_rank[inverse]
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def binary_metrics(
    labels: Sequence[int] | np.ndarray, predicted: Sequence[bool] | np.ndarray
) -> tuple[float | None, float | None, float | None, tuple[tuple[int, int], tuple[int, int]]]:
    """(accuracy, precision, recall, [[tn, fp], [fn, tp]]) of boolean predictions."""
    truth = np.asarray(labels, dtype=bool)
    guess = np.asarray(predicted, dtype=bool)
    tp = int((truth & guess).sum())
    tn = int((~truth & ~guess).sum())
    fp = int((~truth & guess).sum())
    fn = int((truth & ~guess).sum())
    total = tp + tn + fp + fn
    accuracy = (tp + tn) / total if total else None
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return accuracy, precision, recall, ((tn, fp), (fn, tp))


def evaluate_bundle(
    bundle: str | Path,
    data: Dataset | str | Path,
    *,
    split: str = "test",
    attribute: str | None = None,
    provider: str = "auto",
    threads: int | None = None,
    engine: str = "onnxruntime",
    precision: str = "f32",
    variant: str | None = None,
    decode: str | None = None,
    batch_size: int = 64,
    threshold: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    tuned: bool | str | Path | None = None,
    max_pixels: int | None = MAX_PIXELS,
    decode_threads: int | None = None,
    decode_processes: int | None = None,
    batch_processes: int | None = None,
) -> EvaluationResult | ClassesEvaluation:
    """Classify ``split`` of ``data`` (a `Dataset`, or a folder `open_dataset` reads with
    ``attribute``) with the bundle's model on ``engine`` at ``precision`` (`Classifier.from_bundle`)
    and measure it; ``variant`` picks one of the bundle's models (None: ``model.onnx``),
    ``decode`` how files become pixels (None: as the model was trained), ``tuned`` the tuned
    choice at ``batch_size`` instead of the engine, variant, precision and threads (from files,
    with its decoding pool, where `tune --images` measured one). ``max_pixels`` and the pool
    (``decode_threads``, ``decode_processes``, ``batch_processes``) are `predict_files`' own.
    ``progress(done, total)`` is called after each file. A K-class model (K logits or softmax
    probabilities) reads class folders named by its classes and gives a `ClassesEvaluation`."""
    if threshold is not None:  # before the bundle is read; True and "0.5" are not thresholds
        threshold = check_threshold(threshold)
    classifier = Classifier.from_bundle(
        bundle,
        provider=provider,
        threads=threads,
        engine=engine,
        precision=precision,
        variant=variant,
        decode=decode,
        tuned=tuned,
        batch_size=batch_size,
        for_files=True,  # a tuning file's files winner, where it has one
    )
    files: dict[str, Any] = {
        "max_pixels": max_pixels,
        "decode_threads": decode_threads,
        "decode_processes": decode_processes,
        "batch_processes": batch_processes,
    }
    if classifier.output_kind not in BINARY_KINDS:
        if isinstance(data, Dataset):
            dataset = with_classes(data, classifier.classes)
        else:
            dataset = open_dataset(data, attribute, classes=classifier.classes)
        run = classifier.predict_files(dataset.split(split).paths, batch_size=batch_size, **files)
        return classes_evaluation_of(
            run,
            bundle=bundle,
            dataset=dataset,
            split=split,
            classes=classifier.classes,
            provider=run.ran_on(classifier.provider),
            variant=classifier.variant,
            progress=progress,
        )
    dataset = data if isinstance(data, Dataset) else open_dataset(data, attribute)
    chosen = dataset.split(split)
    cut = classifier.threshold if threshold is None else threshold
    results = classifier.predict_files(chosen.paths, batch_size=batch_size, threshold=cut, **files)
    return evaluation_of(
        results,
        bundle=bundle,
        dataset=dataset,
        split=split,
        bundle_labels=classifier.labels,
        threshold=cut,
        provider=results.ran_on(classifier.provider),
        variant=classifier.variant,
        decode=classifier.decode,
        progress=progress,
    )


def evaluation_of(
    results: Iterable[FileResult],
    *,
    bundle: str | Path,
    dataset: Dataset,
    split: str,
    bundle_labels: Mapping[str, Any],
    threshold: float,
    provider: str,
    variant: str,
    decode: str = "exact",
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationResult:
    """The `EvaluationResult` of ``split``'s files classified at ``threshold``: ``results`` has
    one `FileResult` per file of the split, in its order (`evaluate_bundle` gives those of
    `Classifier.predict_files`; `onnxedge.runtime.distributed` those of a Ray run)."""
    chosen = dataset.split(split)
    negative = str(bundle_labels.get("negative", "negative"))
    positive = str(bundle_labels.get("positive", "positive"))
    cut = threshold

    labels: list[int] = []
    scores: list[float] = []
    failed: list[FailedFile] = []
    for done, (label, result) in enumerate(zip(chosen.labels, results, strict=True), start=1):
        if result.prediction is None:
            failed.append(FailedFile(result.file, result.error or "unknown error"))
        else:
            labels.append(label)
            scores.append(result.prediction.probability)
        if progress is not None:
            progress(done, len(chosen))
    probabilities = np.asarray(scores, dtype=np.float64)
    accuracy, precision, recall, confusion = binary_metrics(labels, probabilities >= cut)
    names = (dataset.class_names[0], dataset.class_names[1])
    result = EvaluationResult(
        bundle=str(bundle),
        split=split,
        data=_data_block(dataset),
        class_names=names,
        bundle_labels=(negative, positive),
        threshold=cut,
        provider=provider,
        images=dict(zip(names, chosen.counts(), strict=True)),
        evaluated=len(labels),
        accuracy=accuracy,
        precision=precision,
        recall=recall,
        confusion=confusion,
        roc_auc=roc_auc(labels, probabilities),
        failed=tuple(failed),
        variant=variant,
        decode=decode,
    )
    if not result.labels_match:
        log.warning(
            "the bundle's labels (%s / %s) are not the data's classes (%s / %s): the bundle's "
            "positive class is taken to be %r",
            negative,
            positive,
            *names,
            names[1],
        )
    return result


def classes_evaluation_of(
    results: Iterable[FileResult],
    *,
    bundle: str | Path,
    dataset: Dataset,
    split: str,
    classes: Sequence[str],
    provider: str,
    variant: str,
    progress: Callable[[int, int], None] | None = None,
) -> ClassesEvaluation:
    """Top-1 accuracy and the confusion matrix of a K-class model on ``split``: ``results`` has
    one `FileResult` per file of the split, in its order (as `evaluation_of`)."""
    chosen = dataset.split(split)
    names = tuple(classes)
    index = {name: i for i, name in enumerate(names)}
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    failed: list[FailedFile] = []
    for done, (label, result) in enumerate(zip(chosen.labels, results, strict=True), start=1):
        if result.prediction is None:
            failed.append(FailedFile(result.file, result.error or "unknown error"))
        else:
            confusion[label, index[result.prediction.label]] += 1
        if progress is not None:
            progress(done, len(chosen))
    evaluated = int(confusion.sum())
    counts = chosen.counts(len(names))
    return ClassesEvaluation(
        bundle=str(bundle),
        split=split,
        data=_data_block(dataset),
        class_names=tuple(names),
        provider=provider,
        images={name: n for name, n in zip(names, counts, strict=True) if n},
        evaluated=evaluated,
        accuracy=float(np.trace(confusion)) / evaluated if evaluated else None,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        failed=tuple(failed),
        variant=variant,
    )


def _data_block(dataset: Dataset) -> dict[str, Any]:
    """What a result records about the data set it was measured on."""
    return {
        "root": str(dataset.root),
        "layout": dataset.layout,
        "attribute": dataset.attribute,
        "listing_sha256": dataset.listing_sha256(),
    }
