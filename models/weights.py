"""Weights: from a checkpoint (safetensors, or a state_dict loaded with ``weights_only=True``) or a
seeded initialisation. Either way the result records where the weights came from, and
`module_from_manifest` rebuilds a bundle's module from that record (for parity's live reference and
the bench's PyTorch peers).

A full pickle is never loaded: ``torch.load(weights_only=True)`` refuses arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from onnxedge.models.registry import get_model_spec
from onnxedge.runtime.bundle.hashing import sha256_file
from onnxedge.runtime.errors import OnnxEdgeError, first_line, found_at

log = logging.getLogger(__name__)

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
        raise OnnxEdgeError(f"expected a checkpoint file, found {found_at(path)}")
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
            f"{path}: expected a state_dict or a .safetensors file, found {_refused(e)}"
        ) from None
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise OnnxEdgeError(
            f"{path}: expected a state_dict mapping names to tensors, {_found(obj)}"
        )
    return {str(k).removeprefix("module."): v for k, v in obj.items()}, "state_dict"


_GLOBAL = re.compile(r"(?:unsupported|Unsupported global:) (GLOBAL [\w.]+)")
_REASON_CHARS = 60


def _found(obj: object) -> str:
    """What a checkpoint holds instead of a state_dict, and where its tensors belong."""
    if not isinstance(obj, Mapping):
        return f"found {type(obj).__name__}: save model.state_dict()"
    keys = [repr(str(k))[:40] for k in list(obj)[:4]]
    more = ", ..." if len(obj) > 4 else ""
    *first, last = map(repr, _NESTED_KEYS)
    nested = f"{', '.join(first)} or {last}"
    return f"found a dict of {', '.join(keys)}{more}; put the tensors at the top or under {nested}"


def _refused(e: Exception) -> str:
    """What torch.load(weights_only=True) refused, in a few words, without torch's advice on how
    to load the file anyway (weights_only=False runs whatever code the pickle holds)."""
    found = _GLOBAL.search(str(e))
    if found:
        return f"a pickle of other objects ({found.group(1)}), not loaded: save model.state_dict()"
    reason = first_line(e)
    if "weights_only" in reason or len(reason) > _REASON_CHARS:
        reason = type(e).__name__
    return f"a file torch.load(weights_only=True) cannot read ({reason})"


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> WeightsProvenance:
    """Load a checkpoint into ``model`` strictly; refuse one whose tensors do not fit.

    The error names the first mismatching layer and both shapes, or the first missing or
    unexpected key. Then every tensor is checked before anything is exported: one the model
    holds in floating point must be floating point in the checkpoint (refused, not converted:
    an int64 weight is a wrong file, not a precision), and every floating-point value must be
    finite (the first tensor with NaN or infinities is named, with how many).
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
        if want.is_floating_point() and not got.is_floating_point():
            raise OnnxEdgeError(
                f"checkpoint {path}: tensor {name!r} is {str(got.dtype).removeprefix('torch.')}; "
                f"expected floating point ({str(want.dtype).removeprefix('torch.')})"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            nan = int(torch.isnan(got).sum())
            inf = int(torch.isinf(got).sum())
            raise OnnxEdgeError(
                f"checkpoint {path}: tensor {name!r} holds {nan} NaN and {inf} infinite values; "
                "expected finite weights"
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


CHECKPOINT_FORMAT = "onnxedge.checkpoint"
CHECKPOINT_VERSION = 1
_METADATA_KEY = "onnxedge"  # the safetensors metadata entry holding `CheckpointInfo` as JSON


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What `onnxedge train` records in a checkpoint's safetensors metadata, so that
    `onnxedge export --checkpoint` needs nothing else: the model and head, what the classes are,
    the preprocessing it was trained with, and how it was trained on which data."""

    model: str
    head: str
    class_names: tuple[str, ...]  # index 0 negative, 1 positive
    labels: Mapping[str, Any]  # the manifest's labels block: threshold, positive, negative
    preprocessing: Mapping[str, Any]
    epochs: int
    best_epoch: int
    best_val_accuracy: float
    data: Mapping[str, Any]  # layout, class counts per split, listing_sha256
    attribute: str | None = None
    training: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            **dataclasses.asdict(self),
            "class_names": list(self.class_names),
        }

    def summary(self) -> dict[str, Any]:
        """What a bundle's manifest records about the training (``training``): no history."""
        data = {k: self.data[k] for k in ("layout", "images", "listing_sha256") if k in self.data}
        recipe = {k: v for k, v in self.training.items() if k != "history"}
        return {
            "attribute": self.attribute,
            "class_names": list(self.class_names),
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "data": data,
            "recipe": recipe,
        }

    @classmethod
    def from_dict(cls, block: Mapping[str, Any], source: str) -> CheckpointInfo:
        if block.get("format") != CHECKPOINT_FORMAT:
            raise OnnxEdgeError(
                f"{source}: expected checkpoint metadata of format {CHECKPOINT_FORMAT!r}, found "
                f"{block.get('format')!r}"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]  # fmt: skip
        missing = [name for name in required if name not in block]
        if missing:
            raise OnnxEdgeError(
                f"{source}: the checkpoint metadata lacks {', '.join(missing)}; expected every "
                f"field of {', '.join(required)}"
            )
        labels, preprocessing = block["labels"], block["preprocessing"]
        if not isinstance(labels, Mapping) or not isinstance(preprocessing, Mapping):
            raise OnnxEdgeError(
                f"{source}: the checkpoint metadata's labels and preprocessing must be objects"
            )
        values = {name: block[name] for name in names if name in block}
        values["class_names"] = tuple(str(n) for n in values["class_names"])
        return cls(**values)


def write_checkpoint(
    path: str | Path, tensors: Mapping[str, torch.Tensor], info: CheckpointInfo
) -> None:
    """Write ``tensors`` as safetensors with ``info`` in its metadata, atomically."""
    import json

    from safetensors.torch import save

    from onnxedge.runtime.bundle.write import atomic_write_bytes

    metadata = {_METADATA_KEY: json.dumps(info.to_dict(), sort_keys=True)}
    atomic_write_bytes(path, save(dict(tensors), metadata=metadata))


def read_checkpoint_info(path: str | Path) -> CheckpointInfo | None:
    """The `CheckpointInfo` of a safetensors checkpoint written by `onnxedge train`; None for a
    checkpoint without it (another safetensors file, or a torch state_dict)."""
    from onnxedge.runtime.jsonlimits import load_json

    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    if not path.is_file():
        raise OnnxEdgeError(f"expected a checkpoint file, found {found_at(path)}")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as e:
        raise OnnxEdgeError(f"{path} is not a readable safetensors file: {first_line(e)}") from None
    text = metadata.get(_METADATA_KEY)
    if text is None:
        return None
    block = load_json(text, f"{path}: its onnxedge metadata", error=OnnxEdgeError)
    if not isinstance(block, Mapping):
        raise OnnxEdgeError(f"{path}: expected its onnxedge metadata to be a JSON object")
    return CheckpointInfo.from_dict(block, str(path))


class CannotRebuild(OnnxEdgeError):
    """A manifest that does not give what rebuilding its module here needs: a model that is not in
    the registry, no ``weights`` block (or one with no known source), or a checkpoint bundle whose
    checkpoint was not passed. Callers that can do without the module (the bench's PyTorch peers)
    skip on it; every other error of `module_from_manifest` is the user's to fix."""


def module_from_manifest(
    manifest: Mapping[str, Any], checkpoint: str | Path | None = None
) -> torch.nn.Module:
    """The torch module a bundle was exported from, in eval mode: the registered model and head
    its manifest names, or the factory it records (``onnxedge export --model
    path/to/file.py:factory`` or ``pkg.module:factory``, called again with its ``model_args``
    as the code is now, a file path read from the working directory as at the export), with
    the weights its ``weights`` block records.

    1. ``{"source": "seed", "seed": N}``: the seeded initialisation (`seeded`); passing a
       ``checkpoint`` is an error. A bundle exported with another torch may initialise
       differently: that is logged as a warning.
    2. ``{"source": "checkpoint", "sha256": ...}``: ``checkpoint`` is required, and its sha256
       must be the manifest's, checked before the file is read.
    3. A model neither in the registry nor a factory that loads here, no ``weights`` block, an
       unknown source, a seed that is not an integer, a checkpoint block without a sha256, or
       no ``checkpoint`` where one is needed: `CannotRebuild`.
    """
    build = _builder(manifest)
    weights = manifest.get("weights")
    if not isinstance(weights, Mapping):
        raise CannotRebuild(
            "the manifest has no 'weights' block saying where the weights came from (a seed or a "
            "checkpoint), so the module cannot be rebuilt; re-export the bundle"
        )
    source = weights.get("source")
    if source == "seed":
        seed = weights.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise CannotRebuild(
                f"the manifest's weights come from a seed, but it records no integer seed "
                f"(found {seed!r})"
            )
        if checkpoint is not None:
            raise OnnxEdgeError(
                f"--checkpoint given, but this bundle's weights come from seed {seed}, not a "
                "checkpoint; leave out --checkpoint"
            )
        module, _ = seeded(build, seed)
        _warn_on_other_torch(manifest)
    elif source == "checkpoint":
        expected = weights.get("sha256")
        if not isinstance(expected, str) or not expected:
            raise CannotRebuild(
                f"the manifest's weights come from the checkpoint {weights.get('path')!r} but "
                "record no sha256, so no checkpoint can be verified as that one"
            )
        if checkpoint is None:
            raise CannotRebuild(
                # the remedy first: a short form of the line (bench's "Not measured") keeps it
                f"pass --checkpoint PATH: this bundle was exported from the checkpoint "
                f"{weights.get('path')!r} (sha256 {expected[:12]}…)"
            )
        if not Path(checkpoint).is_file():
            raise OnnxEdgeError(f"expected a checkpoint file, found {found_at(checkpoint)}")
        found = sha256_file(checkpoint)
        if found != expected:
            raise OnnxEdgeError(
                f"checkpoint {checkpoint} is not the one this bundle was exported from: expected "
                f"sha256 {expected[:16]}…, found {found[:16]}…"
            )
        module = build()
        load_checkpoint(module, checkpoint)
    else:
        raise CannotRebuild(
            f"the manifest does not say where the weights came from: expected source 'seed' or "
            f"'checkpoint', found {source!r}"
        )
    return module.eval()


def _builder(manifest: Mapping[str, Any]) -> Any:
    """What builds the module `module_from_manifest` rebuilds, its weights aside: the
    registered model's spec with the manifest's head, or the recorded factory (`CannotRebuild`
    where it does not load here)."""
    name = manifest.get("model")
    factory = manifest.get("factory")
    if isinstance(factory, str):
        from onnxedge.models.loader import build_module, load_factory

        args = manifest.get("model_args")
        if not isinstance(args, Mapping):
            raise CannotRebuild(
                f"the manifest records the factory {factory!r} but not the arguments it was "
                "called with (model_args), so the module cannot be rebuilt"
            )
        try:
            load_factory(factory)
        except OnnxEdgeError as e:
            raise CannotRebuild(
                f"the bundle was exported from the factory {factory!r}, which does not load "
                f"here: {first_line(e)}"
            ) from None

        def build() -> torch.nn.Module:
            try:
                return build_module(factory, args)
            except OnnxEdgeError as e:  # the factory raised, or no longer returns a module
                raise CannotRebuild(
                    f"the bundle was exported from the factory {factory!r}, which fails here: "
                    f"{first_line(e)}"
                ) from None

        return build
    try:
        spec = get_model_spec(str(name))
    except OnnxEdgeError:
        raise CannotRebuild(
            f"model {name!r} is not in onnxedge's registry, so it cannot be rebuilt in PyTorch"
        ) from None
    head = spec.resolve_head(manifest.get("head"))
    return lambda: spec.build(head)


def _warn_on_other_torch(manifest: Mapping[str, Any]) -> None:
    versions = manifest.get("versions")
    exported_with = versions.get("torch") if isinstance(versions, Mapping) else None
    if exported_with and exported_with != torch.__version__:
        log.warning(
            "the bundle was exported with torch %s, this is torch %s: a seeded initialisation "
            "may differ",
            exported_with,
            torch.__version__,
        )
