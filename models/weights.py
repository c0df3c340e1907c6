"""Weights: from a checkpoint (safetensors, or a state_dict loaded with ``weights_only=True``) or a
seeded initialisation. Either way the result records where the weights came from.

A full pickle is never loaded: ``torch.load(weights_only=True)`` refuses arbitrary objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from onnxedge.runtime.errors import OnnxEdgeError, first_line
from onnxedge.runtime.hashing import sha256_file

# Keys under which training scripts commonly nest the state_dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")


@dataclasses.dataclass(frozen=True)
class WeightsProvenance:
    source: str  # "seed" or "checkpoint"
    seed: int | None = None
    path: str | None = None
    format: str | None = None  # "safetensors" or "state_dict"
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def seeded(builder: Any, seed: int) -> tuple[torch.nn.Module, WeightsProvenance]:
    """Build a model with its default initialisation drawn from ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder()
    return model, WeightsProvenance(source="seed", seed=seed)


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read tensors from a safetensors file or a torch state_dict; returns (tensors, format)."""
    path = Path(path)
    if not path.is_file():
        raise OnnxEdgeError(f"expected a checkpoint file, found nothing at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path))), "safetensors"
        except Exception as e:
            raise OnnxEdgeError(
                f"{path} is not a readable safetensors file: {first_line(e)}"
            ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise OnnxEdgeError(
            f"{path}: expected a state_dict (torch.save(model.state_dict())) or a .safetensors "
            f"file; torch.load(weights_only=True) refused it: {first_line(e)}"
        ) from None
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise OnnxEdgeError(
            f"{path}: expected a state_dict mapping names to tensors, found {type(obj).__name__}"
        )
    return {str(k).removeprefix("module."): v for k, v in obj.items()}, "state_dict"


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> WeightsProvenance:
    """Load a checkpoint into ``model`` strictly; refuse one whose tensors do not fit.

    The error names the first mismatching layer and both shapes, or the first missing or
    unexpected key.
    """
    tensors, fmt = read_state_dict(path)
    expected = model.state_dict()
    for name, want in expected.items():
        if name not in tensors:
            raise OnnxEdgeError(
                f"checkpoint {path} does not fit {type(model).__name__}: missing {name!r} "
                f"(expected shape {list(want.shape)})"
            )
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            raise OnnxEdgeError(
                f"checkpoint {path} does not fit {type(model).__name__}: layer {name!r} expects "
                f"shape {list(want.shape)}, checkpoint has {list(got.shape)}"
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise OnnxEdgeError(
            f"checkpoint {path} does not fit {type(model).__name__}: unexpected key {extra[0]!r} "
            f"({len(extra)} unexpected in all)"
        )
    model.load_state_dict({k: tensors[k] for k in expected}, strict=True)
    return WeightsProvenance(
        source="checkpoint", path=Path(path).name, format=fmt, sha256=sha256_file(path)
    )
