"""Golden data for `onnxedge parity`: inputs and PyTorch's outputs for them, made where torch is.

`make_golden` runs at export and gives ``golden.npz`` (format: `onnxedge.runtime.parity`) and the
manifest's ``golden`` block. `live_reference` rebuilds the module from a bundle's manifest and
computes the same reference on the spot, for `onnxedge parity --reference live`.

The references: the eval-mode module in float32 on the float32 inputs, and a float64 copy of it
(``deepcopy(module).double()``) on the same inputs widened to float64 (exactly representable), which
is the truth parity compares against. Probabilities and logits are [N, K], as `forward_with_logits`
gets them for each output kind (the smile model's: the output, and the input of its last
``nn.Sigmoid`` caught with a forward hook, so they come from the same forward).

One float32 run is one sample of how far float32 arithmetic on this model can be: other kernels
sum in other orders. `float32_spread` runs the float32 module again on the largest batch (every
golden row is one of its rows) with other kernels and orders (one thread, channels-last memory,
oneDNN off, one row at a time) and keeps each output's largest distance from float64 over them
all: the least bound parity's judge allows (docs/PARITY.md, "The judge").
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from onnxedge.export.images import read_images
from onnxedge.models.weights import module_from_manifest
from onnxedge.runtime.bundle.outputs import (
    LOGIT,
    LOGITS,
    PROBABILITIES,
    SIGMOID_PROBABILITY,
    centred_logits,
    logits_tensor,
    manifest_kind,
    probabilities,
)
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
    golden_inputs,
    golden_npz_bytes,
)

log = logging.getLogger(__name__)


def forward_with_logits(
    module: torch.nn.Module, x: torch.Tensor, kind: str = SIGMOID_PROBABILITY
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, logits) [N, K] of one forward pass of a model whose output is of ``kind``
    (`onnxedge.runtime.bundle.outputs`).

    1. ``logit``/``logits``: the logits are the output; the probabilities its sigmoid or softmax.
    2. ``sigmoid-probability``/``probabilities``: the probabilities are the output; the logits the
       input of the ``nn.Sigmoid``/``nn.Softmax`` module that returned it, caught with a forward
       hook in the same forward. Where no such module made the output (``torch.softmax`` in
       ``forward``), they are recovered from the probabilities: ``log(p / (1 - p))``, or ``log p``
       for a softmax (its logits up to a constant per row, which is how parity compares them).
    """
    final = torch.nn.Sigmoid if kind == SIGMOID_PROBABILITY else torch.nn.Softmax
    caught: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda _m, args, out: caught.append((args[0], out)))
        for m in module.modules()
        if kind in (SIGMOID_PROBABILITY, PROBABILITIES) and isinstance(m, final)
    ]
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        for handle in hooks:
            handle.remove()
    output = out.numpy()
    if kind in (LOGIT, LOGITS):  # 1.
        return probabilities(output, kind), output
    for before, after in reversed(caught):  # 2.
        if after is out or (after.shape == out.shape and after.data_ptr() == out.data_ptr()):
            return output, before.numpy()
    p = output.astype(np.float64)
    with np.errstate(divide="ignore"):
        logits = np.log(p) - np.log1p(-p) if kind == SIGMOID_PROBABILITY else np.log(p)
    return output, logits.astype(output.dtype)


def reference_batch(
    module: torch.nn.Module,
    module64: torch.nn.Module,
    inputs: np.ndarray,
    kinds: Sequence[str],
    output_kind: str = SIGMOID_PROBABILITY,
) -> ReferenceBatch:
    prob32, logits32 = forward_with_logits(module, torch.from_numpy(inputs), output_kind)
    prob64, logits64 = forward_with_logits(
        module64, torch.from_numpy(inputs.astype(np.float64)), output_kind
    )
    return ReferenceBatch(
        inputs=inputs,
        kinds=tuple(kinds),
        prob=prob64.astype(np.float64),
        logits=logits64.astype(np.float64),
        prob_f32=prob32.astype(np.float32),
        logits_f32=logits32.astype(np.float32),
    )


def _float32_runs(
    module: torch.nn.Module, inputs: np.ndarray, kind: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The float32 module's (probabilities, logits) on ``inputs`` with other kernels and
    summation orders than the default run's."""
    x = torch.from_numpy(inputs)
    runs = {}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        runs["one thread"] = forward_with_logits(module, x, kind)
    finally:
        torch.set_num_threads(threads)
    if x.dim() == 4:
        last = copy.deepcopy(module).to(memory_format=torch.channels_last)
        runs["channels-last"] = forward_with_logits(
            last, x.contiguous(memory_format=torch.channels_last), kind
        )
    with warnings.catch_warnings():  # the flags' own TF32 notice for Intel GPUs
        warnings.simplefilter("ignore", UserWarning)
        with torch.backends.mkldnn.flags(enabled=False):
            runs["oneDNN off"] = forward_with_logits(module, x, kind)
    rows = [forward_with_logits(module, x[i : i + 1], kind) for i in range(len(x))]
    runs["row by row"] = (
        np.concatenate([p for p, _ in rows]),
        np.concatenate([lg for _, lg in rows]),
    )
    return runs


def float32_spread(
    module32: torch.nn.Module, batch: ReferenceBatch, kind: str = SIGMOID_PROBABILITY
) -> dict[str, Any]:
    """Each output's largest ``|float32 - float64|`` over the batch's rows, over the default
    float32 run and `_float32_runs` (logits centred as parity compares them), and the runs."""
    runs = {"default": (batch.prob_f32, batch.logits_f32)}
    runs.update(_float32_runs(module32, batch.inputs, kind))
    prob64, logits64 = batch.prob, centred_logits(batch.logits, kind)

    def worst(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
        diffs = [np.abs(np.asarray(a, dtype=np.float64).reshape(b.shape) - b) for a, b in pairs]
        return (
            float(max(d.max() for d in diffs))
            if all(np.isfinite(d).all() for d in diffs)
            else float("inf")
        )

    return {
        "prob": worst([(p, prob64) for p, _ in runs.values()]),
        "logits": worst([(centred_logits(lg, kind), logits64) for _, lg in runs.values()]),
        "runs": list(runs),
    }


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
    output_kind: str = SIGMOID_PROBABILITY,
) -> Reference:
    """The reference for ``module`` (eval mode is set on copies; ``module`` is left as it is)."""
    module32 = copy.deepcopy(module).eval()
    module64 = copy.deepcopy(module).double().eval()
    batches = {}
    for size in sorted(set(batch_sizes)):
        inputs, kinds = golden_inputs(size, preprocessing, images=images, seed=seed)
        batches[size] = reference_batch(module32, module64, inputs, kinds, output_kind)
    spread = float32_spread(module32, batches[max(batches)], output_kind)
    return Reference(
        source=source,
        description=description or f"PyTorch {torch.__version__} float64",
        preprocessing=dict(preprocessing),
        batches=batches,
        logits_name=logits_name,
        seed=seed,
        float32_spread=spread,
    )


@dataclasses.dataclass(frozen=True)
class GoldenFile:
    """``golden.npz`` and what the manifest records about it."""

    data: bytes
    block: Mapping[str, Any]  # what the manifest's "golden" block records besides the file name
    # The inputs of each batch size (the golden layers are computed on them).
    inputs: Mapping[int, np.ndarray] = dataclasses.field(default_factory=dict)

    def manifest_block(self) -> dict[str, Any]:
        """The manifest's ``golden`` block. The file's sha256 is not in it: the manifest's
        ``files`` entry for it is the one record (verified by `Bundle.file`)."""
        return {"file": GOLDEN, **self.block}


def make_golden(
    module: torch.nn.Module,
    model: onnx.ModelProto,
    preprocessing: Mapping[str, Any],
    *,
    kind: str = SIGMOID_PROBABILITY,
    images_dir: str | Path | None = None,
    arrays: np.ndarray | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    seed: int = GOLDEN_SEED,
) -> GoldenFile:
    """Golden data for the exported ``model`` of ``module``, whose output is of ``kind``.

    Real inputs join the synthetic ones: image files under ``images_dir`` (preprocessed as the
    runtime does), or ``arrays``, already preprocessed float32 [N, C, H, W] inputs (named
    ``input[i]``); as many as fit beside the structured rows and one random row.
    """
    logits_name = logits_tensor(model, kind)
    images: list[tuple[str, np.ndarray]] = []
    skipped: list[str] = []
    room = max(batch_sizes) - 1 - len(STRUCTURED_KINDS)  # structured first, then >= 1 random
    if (images_dir is not None or arrays is not None) and room < 1:
        raise OnnxEdgeError(
            f"{'--images' if images_dir is not None else 'golden_inputs'}: the largest golden "
            f"batch ({max(batch_sizes)}) has no room for images after the "
            f"{len(STRUCTURED_KINDS)} structured rows and one random row"
        )
    if images_dir is not None:
        images, skipped = read_images(images_dir, preprocessing, limit=room)
    if arrays is not None:
        if len(arrays) > room:
            log.warning("golden inputs: using the first %d of %d arrays", room, len(arrays))
        images += [(f"input[{i}]", np.asarray(a)) for i, a in enumerate(arrays[:room])]
    description = f"PyTorch {torch.__version__}, float64 copy of the module"
    reference = compute_reference(
        module,
        preprocessing,
        batch_sizes=batch_sizes,
        images=images,
        seed=seed,
        description=description,
        logits_name=logits_name,
        output_kind=kind,
    )
    kinds = sorted({k for b in reference.batches.values() for k in b.kinds})
    meta = {
        "format": GOLDEN_FORMAT,
        "format_version": GOLDEN_VERSION,
        "batch_sizes": list(reference.batch_sizes),
        "seed": seed,
        "preprocessing": dict(preprocessing),
        "logits": logits_name,
        "output_kind": kind,
        "reference": description,
        "images": [name for name, _ in images],
        "float32_spread": reference.float32_spread,
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
    }
    inputs = {size: b.inputs for size, b in reference.batches.items()}
    return GoldenFile(data=golden_npz_bytes(reference, meta), block=block, inputs=inputs)


def live_reference(
    manifest: Mapping[str, Any],
    batch_sizes: Sequence[int],
    *,
    checkpoint: str | Path | None = None,
) -> Reference:
    """Recompute the reference from the model the manifest names, for any batch sizes.

    Its inputs are made with the registered model's preprocessing (the model's own, not the
    manifest's), so a bundle whose manifest states another one fails the preprocessing check.
    A bundle of a factory (``--model file.py:factory``) has no preprocessing but the one its
    export was given, the manifest's.
    """
    from onnxedge.models import get_model_spec

    module = module_from_manifest(manifest, checkpoint)
    if isinstance(manifest.get("factory"), str):
        name, preprocessing = str(manifest["factory"]), manifest.get("preprocessing") or {}
    else:
        spec = get_model_spec(str(manifest.get("model")))
        name, preprocessing = spec.name, spec.preprocessing
    golden = manifest.get("golden", {})
    seed = int(golden.get("seed", GOLDEN_SEED)) if isinstance(golden, Mapping) else GOLDEN_SEED
    weights = manifest.get("weights", {})
    origin = (
        f"checkpoint {weights.get('path')}"
        if weights.get("source") == "checkpoint"
        else f"seed {weights.get('seed')}"
    )
    logits_name = golden.get("logits") if isinstance(golden, Mapping) else None
    return compute_reference(
        module,
        preprocessing,
        batch_sizes=batch_sizes,
        seed=seed,
        source="live",
        description=f"live: {name} ({origin}) in PyTorch {torch.__version__}, float64",
        logits_name=logits_name if isinstance(logits_name, str) else None,
        output_kind=manifest_kind(manifest.get("output")),
    )
