"""What a `onnxedge.runtime.classifier.classifier.Classifier` returns: `Prediction` per image,
`FileResult` per
file of a batch, `ModelOutputError` for outputs that are not what their kind says, and the helpers
that tell and describe such outputs (`onnxedge.runtime.bundle.outputs` names the kinds).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxedge.runtime.errors import ArgumentError, OnnxEdgeError
from onnxedge.runtime.names import json_name, json_safe, text


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's result. One output: ``positive`` is ``probability >= threshold`` and ``label``
    names it. K classes: ``label`` is the top class, ``probability`` its softmax probability,
    ``class_index`` its index and ``probabilities`` every class's, in the manifest's order of
    ``classes`` (``positive`` and ``threshold`` are None)."""

    probability: float
    positive: bool | None
    label: str
    threshold: float | None
    class_index: int | None = None
    probabilities: tuple[float, ...] = ()
    classes: tuple[str, ...] = ()

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` most probable classes (all with None; ``k`` at least 1), most probable
        first."""
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ArgumentError(f"expected k of at least 1 or None, got {k!r}")
        order = sorted(range(len(self.probabilities)), key=lambda i: -self.probabilities[i])
        return [(self.classes[i], self.probabilities[i]) for i in order[:k]]

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        if self.class_index is None:
            return {"probability": self.probability, "label": self.label, "positive": self.positive}
        return {
            "probability": self.probability,
            "label": self.label,
            "class_index": self.class_index,
            "probabilities": dict(self.top(top_k)),
        }


@dataclasses.dataclass(frozen=True)
class FileResult:
    """One file of a batch: its prediction, or why it could not be used. Truthy when predicted."""

    file: str
    prediction: Prediction | None = None
    error: str | None = None

    def __bool__(self) -> bool:
        return self.error is None

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """The record of `onnxedge predict --json`: ``file`` valid UTF-8 (with ``file_bytes``
        where the name is not, `onnxedge.runtime.names.json_name`)."""
        if self.prediction is None:
            return {**json_name(self.file), "error": text(self.error)}
        return json_safe({**json_name(self.file), **self.prediction.to_dict(top_k)})


def label_names(labels: Mapping[str, Any]) -> tuple[str, str]:
    return str(labels.get("positive", "positive")), str(labels.get("negative", "negative"))


class ModelOutputError(OnnxEdgeError):
    """The model gave something that is not a probability in [0, 1] (NaN, an infinity, a value
    outside the range) for some images: ``rows`` says which. No label is given to them."""

    def __init__(self, message: str, rows: Sequence[int]) -> None:
        super().__init__(message)
        self.rows = tuple(rows)


def not_probabilities(values: np.ndarray) -> np.ndarray:
    """Where ``values`` are not probabilities: NaN, infinite, or outside [0, 1]."""
    with np.errstate(invalid="ignore"):
        return ~((values >= 0.0) & (values <= 1.0))


def first_bad(row: np.ndarray, what: str) -> float:
    """The first value of a row of outputs that is not ``what`` (a probability, a finite logit)."""
    bad = ~np.isfinite(row) if what == "a finite logit" else not_probabilities(row)
    return float(row[int(np.argmax(bad))])


def describe_bad(values: np.ndarray, rows: np.ndarray, most: int = 4) -> str:
    shown = ", ".join(f"row {i}: {values[i]:g}" for i in rows[:most])
    return shown + (f", and {len(rows) - most} more" if len(rows) > most else "")
