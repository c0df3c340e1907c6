"""What every inference engine offers the rest of the runtime: the `Session` protocol, which an
`onnxruntime.InferenceSession` already satisfies as it is, the engine names, and the error for an
engine that cannot run here.

Classifier, parity and bench call only ``run(output_names, feeds)``, ``get_inputs()`` and
``get_outputs()`` (each item with ``.name`` and ``.shape``), so ONNX Runtime's session is used
unwrapped and another engine's runner (`onnxedge.runtime.engines.openvino.runner`) implements the
same three methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from onnxedge.runtime.errors import ProviderUnavailable

ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
# Every engine onnxedge can run a bundle on, in the order reports list them.
ENGINES = (ONNXRUNTIME, OPENVINO)


class EngineUnavailable(ProviderUnavailable):
    """The requested engine cannot run here (its package is not installed or cannot be imported,
    the CPU lacks what was asked for). A `ProviderUnavailable`, so reports mark it SKIPPED with
    the reason, never passed."""


class TensorInfo(Protocol):
    name: str
    shape: Sequence[Any]


class Session(Protocol):
    """One model compiled on one engine; thread-safe ``run`` as ONNX Runtime's."""

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]: ...

    def get_inputs(self) -> Sequence[TensorInfo]: ...

    def get_outputs(self) -> Sequence[TensorInfo]: ...


@dataclasses.dataclass(frozen=True)
class PortInfo:
    """A model input or output as `Session.get_inputs` lists it: its name, its shape (None for a
    dynamic dim, as onnxruntime gives the symbol's name) and its numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


def check_engine(name: Any) -> str:
    """``name`` as one of `ENGINES` (case-insensitive), else an `OnnxEdgeError` listing them."""
    from onnxedge.runtime.errors import OnnxEdgeError

    key = name.strip().lower() if isinstance(name, str) else None
    if key not in ENGINES:
        raise OnnxEdgeError(f"unknown engine {name!r}; expected one of: {', '.join(ENGINES)}")
    return key
