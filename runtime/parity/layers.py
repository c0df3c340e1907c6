"""What the layers of ``model.onnx`` are and what they should compute, as the export recorded it.

The manifest's ``layers`` block (written by `onnxedge export`, read here without torch)::

    "layers": {
      "modules": {"conv2d": {"module": "conv1", "class": "Conv2d"}, ...},
      "golden": {"file": "golden_layers.npz", "batch_sizes": [7], "tensors": 15, "bytes": ...}
    }

1. ``modules`` maps a tensor of the final graph (after onnxsim and the GAP lowering) to the
   PyTorch module whose output it is. Tensors of no module (constants, reshapes written in
   ``forward``) are absent and named by their node only.
2. ``golden`` names the golden layers file, or says why none was stored
   (``{"file": null, "reason": "..."}``): ``golden_layers.npz``, a deflated npz
   (`GOLDEN_LAYERS`) with a ``meta`` entry (JSON: format, version, batch sizes, the tensors in
   the graph's order, how the reference was computed) and one array ``tI_bN`` per tensor I and
   batch size N: the float64 PyTorch reference rounded to float32 (a relative rounding of at most
   6e-8, far below any tolerance it is used with). Their inputs are the golden data's batch N
   (``golden.npz``, read with `load_golden`); format version 1 also stored them, as
   ``inputs_bN``, and is still read. The file is listed in the manifest's ``files`` with its
   sha256, verified before it is read.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxedge.runtime.bundle.reader import Bundle
from onnxedge.runtime.errors import BundleError, OnnxEdgeError
from onnxedge.runtime.parity.golden import load_golden
from onnxedge.runtime.parity.npz import npz_bytes, read_meta, read_npz
from onnxedge.runtime.parity.reference import canonical_json

GOLDEN_LAYERS = "golden_layers.npz"
# Golden layers are stored for the largest golden batch whose layers, as float32, fit this many
# megabytes (smile_cnn: 2.2 MB a row, so batch 2, zeros and a random row, a 1.6 MB file deflated;
# `onnxedge export --golden-layers-budget 16` stores batch 7, every structured input).
DEFAULT_GOLDEN_LAYERS_BUDGET_MB = 5.0
LAYERS_FORMAT = "onnxedge-golden-layers"
LAYERS_VERSION = 2
LAYERS_READABLE_VERSIONS = (1, 2)


class NoGoldenLayers(OnnxEdgeError):
    """The bundle holds no golden layers (exported without them, or before onnxedge stored
    them); the message says why, and the caller adds what to use instead."""


@dataclasses.dataclass(frozen=True)
class ModuleRef:
    """The PyTorch module that computed a tensor: its qualified name and class."""

    name: str
    cls: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.cls})" if self.cls else self.name

    def to_dict(self) -> dict[str, str]:
        return {"module": self.name, "class": self.cls}


def layer_modules(manifest: Mapping[str, Any]) -> dict[str, ModuleRef]:
    """1. The tensor -> module map of a manifest; empty where the export recorded none."""
    block = manifest.get("layers")
    modules = block.get("modules") if isinstance(block, Mapping) else None
    if modules is None:
        return {}
    if not isinstance(modules, Mapping):
        raise BundleError(
            f"the manifest's layers.modules: expected a mapping of tensor names to modules, "
            f"found {type(modules).__name__}"
        )
    found: dict[str, ModuleRef] = {}
    for tensor, entry in modules.items():
        name = entry.get("module") if isinstance(entry, Mapping) else None
        cls = entry.get("class", "") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not isinstance(cls, str):
            raise BundleError(
                f"the manifest's layers.modules[{tensor!r}]: expected "
                f'{{"module": NAME, "class": CLASS}}, found {entry!r}'
            )
        found[str(tensor)] = ModuleRef(name, cls)
    return found


@dataclasses.dataclass(frozen=True)
class GoldenLayers:
    """2. The reference of every stored tensor, per batch size, and the inputs it was made on."""

    description: str
    tensors: tuple[str, ...]
    inputs: Mapping[int, np.ndarray]  # batch size -> float32 [N, C, H, W]
    batches: Mapping[int, Mapping[str, np.ndarray]]  # batch size -> tensor -> array
    # Tensor -> the scale it is judged at, where not its own RMS (3.: a folded constant).
    scales: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # Tensor -> PyTorch's own float32 error there, max |float32 - float64| (the layer check's
    # rounding term, `layer_compare.layer_bound`); absent in golden layers written before it.
    float32_errors: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # Tensor -> the same of PyTorch's float32 run whose global means are summed in sequence, where
    # larger (`layer_compare.layer_bound`); absent in golden layers written before it.
    sequence_errors: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.batches))


def golden_layers_npz_bytes(
    tensors: Sequence[str],
    batches: Mapping[int, Mapping[str, np.ndarray]],
    *,
    reference: str,
    scales: Mapping[str, float] | None = None,
    float32_errors: Mapping[str, float] | None = None,
    sequence_errors: Mapping[str, float] | None = None,
) -> bytes:
    """``golden_layers.npz`` (format version 2) for ``batches`` (batch size -> tensor -> array,
    every tensor of ``tensors`` in each; their inputs are the golden data's batches of those
    sizes), deflated, byte-identical for identical contents. Floating-point arrays are stored as
    float32."""
    sizes = sorted(batches)
    meta = {
        "format": LAYERS_FORMAT,
        "format_version": LAYERS_VERSION,
        "batch_sizes": sizes,
        "tensors": list(tensors),
        "reference": reference,
    }
    if scales:
        meta["scales"] = {t: float(scales[t]) for t in tensors if t in scales}
    if float32_errors:
        errors = {t: float(float32_errors[t]) for t in tensors if t in float32_errors}
        meta["float32_errors"] = errors
    if sequence_errors:
        errors = {t: float(sequence_errors[t]) for t in tensors if t in sequence_errors}
        meta["sequence_errors"] = errors
    arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(canonical_json(meta), dtype=np.uint8)}
    for size in sizes:
        for i, name in enumerate(tensors):
            array = np.asarray(batches[size][name])
            if array.dtype.kind == "f":
                array = array.astype(np.float32)
            arrays[f"t{i}_b{size}"] = array
    return npz_bytes(arrays)


def load_golden_layers(bundle: Bundle) -> GoldenLayers:
    """2. The bundle's golden layers, the file's sha256 checked against the manifest first;
    `NoGoldenLayers` where it holds none, a `BundleError` where the file is not what the manifest
    says."""
    block = bundle.manifest.get("layers")
    golden = block.get("golden") if isinstance(block, Mapping) else None
    name = golden.get("file") if isinstance(golden, Mapping) else None
    if not name:
        why = golden.get("reason") if isinstance(golden, Mapping) else None
        raise NoGoldenLayers(
            f"{bundle.path} has no golden layers ("
            + (
                str(why)
                if why
                else "its manifest records none: exported without them, or by an "
                "onnxedge that did not store them"
            )
            + ")"
        )
    path = bundle.file(str(name))  # verifies the sha256 against the manifest's file list
    arrays = read_npz(path)
    meta = _meta(path, arrays)
    tensors = tuple(meta["tensors"])
    inputs: dict[int, np.ndarray] = {}
    batches: dict[int, dict[str, np.ndarray]] = {}
    golden = load_golden(bundle) if meta["format_version"] >= 2 else None
    for size in meta["batch_sizes"]:
        if golden is None:  # version 1 holds its inputs
            x = arrays.get(f"inputs_b{size}")
        elif size in golden.batches:
            x = golden.batches[size].inputs
        else:
            raise BundleError(
                f"{path} holds layers of batch {size}, whose inputs the golden data lacks (it "
                f"holds batch sizes {', '.join(map(str, golden.batch_sizes))})"
            )
        if x is None or x.dtype != np.float32 or x.ndim < 1 or x.shape[0] != size:
            raise BundleError(f"{path}: expected float32 inputs_b{size} of {size} rows")
        inputs[size] = x
        layer: dict[str, np.ndarray] = {}
        for i, tensor in enumerate(tensors):
            array = arrays.get(f"t{i}_b{size}")
            if array is None:
                raise BundleError(f"{path} lacks t{i}_b{size} (tensor {tensor!r}, batch {size})")
            if array.dtype.kind not in "fiub":
                raise BundleError(f"{path}: t{i}_b{size} is {array.dtype}, expected numbers")
            layer[tensor] = array
        batches[size] = layer
    return GoldenLayers(
        description=f"golden layers in {name} ({meta.get('reference', 'PyTorch')})",
        tensors=tensors,
        inputs=inputs,
        batches=batches,
        scales=_positive(path, meta, "scales", zero=False),
        float32_errors=_positive(path, meta, "float32_errors", zero=True),
        sequence_errors=_positive(path, meta, "sequence_errors", zero=True),
    )


def _positive(path: Any, meta: Mapping[str, Any], key: str, *, zero: bool) -> dict[str, float]:
    """The meta's ``key``: finite numbers by tensor, positive (or zero where ``zero``)."""
    values = meta.get(key, {})
    if not isinstance(values, Mapping) or not all(
        isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or (zero and v == 0))
        for v in values.values()
    ):
        what = "non-negative" if zero else "positive"
        raise BundleError(f"{path}: expected {what} {key} by tensor in its meta, found {values!r}")
    return {str(t): float(v) for t, v in values.items()}


def _meta(path: Any, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    meta = read_meta(
        path, arrays, fmt=LAYERS_FORMAT, versions=LAYERS_READABLE_VERSIONS, what="golden layers"
    )
    tensors = meta.get("tensors")
    if not (isinstance(tensors, list) and all(isinstance(t, str) for t in tensors)):
        raise BundleError(f"{path}: expected a list of tensor names in its meta, found {tensors!r}")
    return meta
