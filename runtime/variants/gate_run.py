"""What `optimize`'s gate runs: a session on each model (for an int8 file also one on its float
reference, `gate.judge`'s ``float_reference``), the probabilities it gives on the test split, and
each variant's gate (`run_gates`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxedge.runtime.bundle.outputs import BINARY_KINDS, SIGMOID_PROBABILITY, probabilities
from onnxedge.runtime.classifier.preprocess import FAST
from onnxedge.runtime.engines.onnxruntime.session import SessionConfig, make_session
from onnxedge.runtime.errors import ProviderUnavailable
from onnxedge.runtime.variants.gate import GateCriteria, GateResult, judge
from onnxedge.runtime.variants.manifest import FP16, FP32
from onnxedge.runtime.variants.samples import iter_chunks

if TYPE_CHECKING:
    from onnxedge.runtime.bundle.reader import Bundle
    from onnxedge.runtime.data import Split

log = logging.getLogger(__name__)

GATE_BATCH = 64
# The name under which the gate keeps an int8 variant's file run by its float reference.
FLOAT_REFERENCE = " float reference"
# The name of the fast decode's gate (`--fast-decode`) in reports; it is not a variant.
DECODE_FAST = "decode-fast"
FP16_ON_CPU = (
    "fp16: gated on the CPU EP (no CUDA EP here); it is made for the CUDA EP: on the CPU EP it "
    "runs slower than fp32"
)


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


def run_gates(
    source: Bundle,
    test: Split,
    made: Mapping[str, Mapping[str, Any]],
    criteria: GateCriteria,
    *,
    threads: int | None,
    fast_decode: bool,
    int8: Collection[str],
    pixels: Collection[str],
    say: Callable[[str], None],
) -> dict[str, GateResult]:
    """fp32 and each variant in ``made`` (name -> its entry, the file at ``"_path"``) on the test
    split, decoded once; the gate of each variant, and with ``fast_decode`` the fast decode's
    (`DECODE_FAST`: fp32 on its pixels against fp32 on the exact ones). fp16 runs on the CUDA EP
    where it loads, else on the CPU; each ``int8`` ``.onnx`` file also by its float reference; the
    ``pixels`` variants take the uint8 pixels."""
    sessions = {FP32: gate_session(source.model_path, "cpu", threads)}
    for name, entry in made.items():
        path = Path(entry["_path"])
        if name == FP16:
            try:
                sessions[name] = gate_session(path, "cuda", threads)
                continue
            except ProviderUnavailable as e:
                log.info("no CUDA EP for fp16: %s", e)
                say(FP16_ON_CPU)
        sessions[name] = gate_session(path, "cpu", threads)
        if name in int8 and path.suffix == ".onnx":
            sessions[float_reference_name(name)] = gate_session(
                path, "cpu", threads, optimized=False
            )
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in sessions}
    labels: list[np.ndarray] = []
    what = "test images (the gate)"
    for chunk in iter_chunks(test, source.preprocessing, what=what):
        labels.append(chunk.labels)
        for name, (session, _) in sessions.items():
            inputs = chunk.pixels if name.removesuffix(FLOAT_REFERENCE) in pixels else chunk.inputs
            outputs[name].append(
                gate_probabilities(session, source.input.name, inputs, source.output_kind)
            )
    threshold = source.threshold if source.output_kind in BINARY_KINDS else None
    truth, reference = np.concatenate(labels), np.concatenate(outputs[FP32])
    gates = {}
    if fast_decode:
        fp32 = sessions[FP32][0]
        fast = [
            gate_probabilities(fp32, source.input.name, chunk.inputs, source.output_kind)
            for chunk in iter_chunks(test, source.preprocessing, what=what, decode=FAST)
        ]
        gates[DECODE_FAST] = judge(
            DECODE_FAST,
            reference,
            np.concatenate(fast),
            truth,
            threshold=threshold,
            criteria=criteria,
            provider=sessions[FP32][1],
        )
    return gates | {
        name: judge(
            name,
            reference,
            np.concatenate(outputs[name]),
            truth,
            threshold=threshold,
            criteria=criteria,
            provider=sessions[name][1],
            float_reference=(
                np.concatenate(outputs[float_reference_name(name)])
                if float_reference_name(name) in outputs
                else None
            ),
            weights_7_bit=(made[name].get("made") or {}).get("weights_7_bit"),
        )
        for name in made
    }


__all__ = [
    "DECODE_FAST",
    "FLOAT_REFERENCE",
    "FP16_ON_CPU",
    "GATE_BATCH",
    "float_reference_name",
    "gate_probabilities",
    "gate_session",
    "run_gates",
]
