"""What `optimize`'s gate runs: a session on each model (for an int8 file also one on its float
reference, `gate.judge`'s ``float_reference``) and the probabilities it gives on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onnxedge.runtime.bundle.outputs import BINARY_KINDS, SIGMOID_PROBABILITY, probabilities
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session

GATE_BATCH = 64
# The name under which the gate keeps an int8 variant's file run by its float reference.
FLOAT_REFERENCE = " float reference"


def float_reference_name(variant: str) -> str:
    return variant + FLOAT_REFERENCE


def gate_session(
    path: Path, provider: str, threads: int | None, *, optimized: bool = True
) -> tuple[Any, str]:
    """A session on ``path`` and the provider it runs on; not ``optimized``: onnxruntime's graph
    optimisations off, so that an int8 file's Q/DQ pairs run in float as written (its float
    reference), not in int8 kernels."""
    config = SessionConfig(
        provider=provider, threads=threads, graph_optimization="all" if optimized else "disable"
    )
    session = make_session(path, config)
    return session, session.get_providers()[0]


def gate_probabilities(
    session: Any, input_name: str, inputs: np.ndarray, kind: str = SIGMOID_PROBABILITY
) -> np.ndarray:
    """The positive class's output [N] of a binary model; the K class probabilities [N, K] of a
    K-class one (the softmax of its logits)."""
    parts = []
    for start in range(0, len(inputs), GATE_BATCH):
        (out,) = session.run(None, {input_name: inputs[start : start + GATE_BATCH]})[:1]
        out = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
        parts.append(out[:, 0] if kind in BINARY_KINDS else probabilities(out, kind))
    return np.concatenate(parts)


__all__ = [
    "FLOAT_REFERENCE",
    "GATE_BATCH",
    "float_reference_name",
    "gate_probabilities",
    "gate_session",
]
