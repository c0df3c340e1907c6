"""Golden data for `onnxedge parity`: inputs and PyTorch's outputs for them, made where torch is.

`make_golden` runs at export and gives ``golden.npz`` (format: `onnxedge.runtime.parity`) and the
manifest's ``golden`` block. `live_reference` rebuilds the module from a bundle's manifest and
computes the same reference on the spot, for `onnxedge parity --reference live`.

The references: the eval-mode module in float32 on the float32 inputs, and a float64 copy of it
(``deepcopy(module).double()``) on the same inputs widened to float64 (exactly representable), which
is the truth parity compares against. Probabilities are the module's output; the logits are the
input of its last ``nn.Sigmoid``, caught with a forward hook, so they come from the same forward.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.parity import (
    DEFAULT_BATCH_SIZES,
    GOLDEN,
    GOLDEN_FORMAT,
    GOLDEN_SEED,
    GOLDEN_VERSION,
    STRUCTURED_KINDS,
    Reference,
    ReferenceBatch,
    find_logits_tensor,
    golden_inputs,
    golden_npz_bytes,
    preprocessing_sha256,
)
from onnxedge.runtime.preprocess import load_image

log = logging.getLogger(__name__)


def forward_with_logits(module: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, logits) of one forward pass; logits are the input of the last Sigmoid."""
    sigmoids = [m for m in module.modules() if isinstance(m, torch.nn.Sigmoid)]
    if not sigmoids:
        raise OnnxEdgeError(
            f"{type(module).__name__} has no nn.Sigmoid: golden data needs its pre-sigmoid values"
        )
    caught: list[torch.Tensor] = []
    handle = sigmoids[-1].register_forward_hook(lambda _m, args, _out: caught.append(args[0]))
    try:
        with torch.no_grad():
            prob = module(x)
    finally:
        handle.remove()
    return prob.numpy(), caught[-1].numpy()


def reference_batch(
    module: torch.nn.Module, module64: torch.nn.Module, inputs: np.ndarray, kinds: Sequence[str]
) -> ReferenceBatch:
    prob32, logits32 = forward_with_logits(module, torch.from_numpy(inputs))
    prob64, logits64 = forward_with_logits(module64, torch.from_numpy(inputs.astype(np.float64)))
    return ReferenceBatch(
        inputs=inputs,
        kinds=tuple(kinds),
        prob=prob64.astype(np.float64),
        logits=logits64.astype(np.float64),
        prob_f32=prob32.astype(np.float32),
        logits_f32=logits32.astype(np.float32),
    )


def compute_reference(
    module: torch.nn.Module,
    preprocessing: Mapping[str, Any],
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    images: Sequence[tuple[str, np.ndarray]] = (),
    seed: int = GOLDEN_SEED,
    source: str = "golden",
    description: str = "",
    logits_name: str | None = None,
) -> Reference:
    """The reference for ``module`` (eval mode is set on copies; ``module`` is left as it is)."""
    module32 = copy.deepcopy(module).eval()
    module64 = copy.deepcopy(module).double().eval()
    batches = {}
    for size in sorted(set(batch_sizes)):
        inputs, kinds = golden_inputs(size, preprocessing, images=images, seed=seed)
        batches[size] = reference_batch(module32, module64, inputs, kinds)
    return Reference(
        source=source,
        description=description or f"PyTorch {torch.__version__} float64",
        preprocessing=dict(preprocessing),
        batches=batches,
        logits_name=logits_name,
        seed=seed,
    )


def read_images(
    directory: str | Path, preprocessing: Mapping[str, Any]
) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Every readable image in ``directory`` (sorted by name), preprocessed with the runtime's
    `load_image`, the same path `onnxedge predict` takes. A file that is not a usable image is
    skipped with a warning; returns (images, "name: why" for each skipped file)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise OnnxEdgeError(
            f"--images: expected a directory of images, found no directory at {directory}"
        )
    images, skipped = [], []
    for path in sorted(p for p in directory.iterdir() if not p.name.startswith(".")):
        if path.is_dir():
            continue
        try:
            images.append((path.name, load_image(path, preprocessing)))
        except OnnxEdgeError as e:
            log.warning("skipped %s", e)
            skipped.append(f"{path.name}: {e}")
    if not images:
        raise OnnxEdgeError(
            f"--images: expected image files in {directory}, found none readable "
            f"({len(skipped)} skipped)"
        )
    return images, skipped


@dataclasses.dataclass(frozen=True)
class GoldenFile:
    """``golden.npz`` and what the manifest records about it."""

    data: bytes
    block: Mapping[str, Any]  # the manifest's "golden" block, without the sha256

    def manifest_block(self, sha256: str) -> dict[str, Any]:
        return {"file": GOLDEN, "sha256": sha256, **self.block}


def make_golden(
    module: torch.nn.Module,
    model: onnx.ModelProto,
    preprocessing: Mapping[str, Any],
    *,
    images_dir: str | Path | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    seed: int = GOLDEN_SEED,
) -> GoldenFile:
    """Golden data for the exported ``model`` of ``module``."""
    logits_name = find_logits_tensor(model)
    images: list[tuple[str, np.ndarray]] = []
    skipped: list[str] = []
    if images_dir is not None:
        images, skipped = read_images(images_dir, preprocessing)
        room = max(batch_sizes) - 1 - len(STRUCTURED_KINDS)  # structured first, then >= 1 random
        if len(images) > room:
            log.warning(
                "--images: the largest golden batch has room for %d images; using the first %d "
                "of %d (sorted by name)",
                room,
                room,
                len(images),
            )
            images = images[:room]
    description = f"PyTorch {torch.__version__}, float64 copy of the module"
    reference = compute_reference(
        module,
        preprocessing,
        batch_sizes=batch_sizes,
        images=images,
        seed=seed,
        description=description,
        logits_name=logits_name,
    )
    kinds = sorted({k for b in reference.batches.values() for k in b.kinds})
    meta = {
        "format": GOLDEN_FORMAT,
        "format_version": GOLDEN_VERSION,
        "batch_sizes": list(reference.batch_sizes),
        "seed": seed,
        "preprocessing": dict(preprocessing),
        "logits": logits_name,
        "reference": description,
        "images": [name for name, _ in images],
    }
    block = {
        "format": GOLDEN_FORMAT,
        "format_version": GOLDEN_VERSION,
        "batch_sizes": list(reference.batch_sizes),
        "inputs": kinds,
        "seed": seed,
        "images": [name for name, _ in images],
        "images_skipped": skipped,
        "logits": logits_name,
        "reference": description,
        "preprocessing_sha256": preprocessing_sha256(preprocessing),
    }
    return GoldenFile(data=golden_npz_bytes(reference, meta), block=block)


def rebuild_module(manifest: Mapping[str, Any], checkpoint: str | Path | None = None) -> Any:
    """The torch module a bundle was exported from: its registered model and head, with the seeded
    initialisation or ``checkpoint`` (whose sha256 must be the manifest's)."""
    from onnxedge.models import get_model_spec
    from onnxedge.models.weights import load_checkpoint, seeded

    spec = get_model_spec(str(manifest.get("model")))
    head = spec.resolve_head(manifest.get("head"))
    weights = manifest.get("weights", {})
    module, _ = seeded(lambda: spec.build(head), int(weights.get("seed") or 0))
    if weights.get("source") == "checkpoint":
        if checkpoint is None:
            raise OnnxEdgeError(
                f"this bundle was exported from the checkpoint {weights.get('path')!r} (sha256 "
                f"{str(weights.get('sha256'))[:16]}…): pass it with --checkpoint PATH"
            )
        provenance = load_checkpoint(module, checkpoint)
        if provenance.sha256 != weights.get("sha256"):
            raise OnnxEdgeError(
                f"checkpoint {checkpoint} is not the one this bundle was exported from: expected "
                f"sha256 {str(weights.get('sha256'))[:16]}…, found {str(provenance.sha256)[:16]}…"
            )
    elif checkpoint is not None:
        raise OnnxEdgeError(
            f"this bundle's weights come from seed {weights.get('seed')}, not a checkpoint; "
            "leave out --checkpoint"
        )
    exported_with = manifest.get("versions", {}).get("torch")
    if exported_with and exported_with != torch.__version__:
        log.warning(
            "the bundle was exported with torch %s, this is torch %s: a seeded initialisation "
            "may differ",
            exported_with,
            torch.__version__,
        )
    return module.eval()


def live_reference(
    manifest: Mapping[str, Any],
    batch_sizes: Sequence[int],
    *,
    checkpoint: str | Path | None = None,
) -> Reference:
    """Recompute the reference from the model the manifest names, for any batch sizes.

    Its inputs are made with the registered model's preprocessing (the model's own, not the
    manifest's), so a bundle whose manifest states another one fails the preprocessing check.
    """
    from onnxedge.models import get_model_spec

    module = rebuild_module(manifest, checkpoint)
    spec = get_model_spec(str(manifest.get("model")))
    golden = manifest.get("golden", {})
    seed = int(golden.get("seed", GOLDEN_SEED)) if isinstance(golden, Mapping) else GOLDEN_SEED
    weights = manifest.get("weights", {})
    origin = (
        f"checkpoint {weights.get('path')}"
        if weights.get("source") == "checkpoint"
        else f"seed {weights.get('seed')}"
    )
    return compute_reference(
        module,
        spec.preprocessing,
        batch_sizes=batch_sizes,
        seed=seed,
        source="live",
        description=f"live: {spec.name} ({origin}) in PyTorch {torch.__version__}, float64",
    )
