"""What the benchmark times: an engine's description (`EngineInfo`), the `Engine` and `Runner`
protocols every engine follows, `SkippedEngine` for one that cannot run here, and the names and
modes of the PyTorch peers (`peer_info`, `peer_modes`); `onnxedge.runtime.bench.peers` builds
them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from onnxedge.runtime.variants.manifest import FP32
from onnxedge.runtime.variants.manifest import VARIANTS as MODEL_VARIANTS

ORT = "onnxruntime"
PYTORCH = "pytorch"
E2E = "end-to-end"  # host arrays in, host arrays out
RESIDENT = "device-resident"  # inputs and outputs already on the device (IO binding)
GRAPH = "cuda-graph"  # device-resident, replayed as one captured CUDA graph
# Image files in, predictions out, through `Classifier.predict_files` (what `onnxedge predict`
# runs): decoding, preprocessing and inference; one timed call is a pass over a folder.
FILES = "from-files"

# --peers name -> engine name in the report.
PEERS = {
    "eager": "torch-eager",
    "channels-last": "torch-channels-last",
    "compile": "torch-compile",
}
# The peer mode an ORT mode is compared with.
PEER_MODE = {E2E: E2E, RESIDENT: RESIDENT, GRAPH: RESIDENT}
PROVIDER_DEVICE = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda",
}


def ort_engine_name(short: str) -> str:
    """The engine name of ONNX Runtime on provider ``short``: ``onnxruntime`` on the CPU and CUDA
    EPs (told apart by device), ``onnxruntime-<provider>`` on others (``onnxruntime-tensorrt``)."""
    short = short.lower()
    return ORT if short in ("cpu", "cuda") else f"{ORT}-{short}"


# The bundle's models a report's rows may name (`EngineInfo.variant`, `--variants`): fp32
# (model.onnx) and what `onnxedge optimize` adds (`onnxedge.runtime.variants`). A new one joins
# there.
VARIANTS = MODEL_VARIANTS
# Inference precisions an engine may run a model at other than the model's own
# (`EngineInfo.precision`): OpenVINO's bf16. A new one joins here.
PRECISIONS = ("bf16",)


def target_engines() -> tuple[str, ...]:
    """Every engine name a benchmark target may name: ONNX Runtime on each provider, every engine
    of `onnxedge.runtime.engines` and the PyTorch peers. An engine the report names joins there."""
    from onnxedge.runtime.engines.base import ENGINES
    from onnxedge.runtime.engines.onnxruntime.session import PROVIDERS

    ort = (ort_engine_name(p) for p in PROVIDERS)
    return tuple(dict.fromkeys([*ort, *ENGINES, *PEERS.values()]))


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    """What an engine is: its name, device, mode and the settings it runs with."""

    engine: str  # "onnxruntime", "torch-eager", "torch-channels-last", "torch-compile", ...
    family: str  # ORT or PYTORCH
    device: str  # "cpu" or "cuda"
    mode: str  # E2E, RESIDENT or GRAPH
    provider: str  # the ORT execution provider, or the torch device
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Which of the bundle's models: "fp32" (model.onnx) or a variant (`VARIANTS`).
    variant: str = FP32
    # An inference precision other than the model's own (`PRECISIONS`: OpenVINO's "bf16"), or "".
    precision: str = ""
    # What sets this row apart from the engine's usual one, or "": ``tuned (2 threads)`` for the
    # setup a tuning file chose (`bench --tuned`, `onnxedge.runtime.bench.tuned`).
    tag: str = ""
    # The from-files rows: how the files became pixels ("exact" or "fast"); "" for the others.
    decode: str = ""

    @property
    def label(self) -> str:
        """``engine device mode`` and the variant and precision where they are not fp32 as
        stored, and the tag: ``onnxruntime cpu end-to-end``, ``openvino cpu end-to-end int8``."""
        variant = "" if self.variant == FP32 else self.variant
        return " ".join(
            filter(
                None,
                (
                    self.engine,
                    self.device,
                    self.mode,
                    variant,
                    self.precision,
                    self.tag,
                    self.decode,
                ),
            )
        )

    @property
    def short(self) -> str:
        """The engine with its variant, precision and tag, as the report's tables name it:
        ``onnxruntime``, ``onnxruntime int8``, ``openvino bf16``."""
        variant = "" if self.variant == FP32 else self.variant
        return " ".join(filter(None, (self.engine, variant, self.precision, self.tag, self.decode)))

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, **dataclasses.asdict(self)}


class Runner(Protocol):
    """One engine prepared for one input. `run` is the timed call; the rest is not timed."""

    extras: Mapping[str, Any]  # figures measured while preparing, e.g. {"compile_s": 12.3}

    def run(self) -> None: ...

    def output(self) -> np.ndarray: ...  # a host copy of the first output of the last run

    def close(self) -> None: ...


class Engine(Protocol):
    info: EngineInfo

    def prepare(self, x: np.ndarray) -> Runner: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class SkippedEngine:
    """An engine that cannot run here, and why."""

    info: EngineInfo
    reason: str
    # The batch sizes its rows are at, where not the run's (a from-files engine's one size).
    batch_sizes: tuple[int, ...] | None = None

    def close(self) -> None:
        pass


AnyEngine = Engine | SkippedEngine


def peer_info(
    peer: str, device: str, mode: str, settings: Mapping[str, Any] | None = None
) -> EngineInfo:
    """The `EngineInfo` of a PyTorch peer (`peer` is a --peers name)."""
    return EngineInfo(
        engine=PEERS[peer],
        family=PYTORCH,
        device=device,
        mode=mode,
        provider=f"torch {device}",
        settings=dict(settings or {}),
    )


def peer_modes(device: str) -> tuple[str, ...]:
    """The modes a peer is timed in: end-to-end on the CPU; on a GPU also device-resident."""
    return (E2E,) if device == "cpu" else (E2E, RESIDENT)
