"""The export side of layer localisation (`onnxedge.runtime.parity.localize`): which PyTorch module
made each tensor of the final graph, and golden layers, PyTorch's value of those tensors on the
golden inputs.

1. `tensor_modules` reads the map from the exported graph, before onnxsim strips node metadata:
   the dynamo exporter's ``pkg.torch.onnx.name_scopes`` (``['', 'features', 'features.0',
   'features.0.bn', 'batch_norm']``: the innermost module is the one before the op), or the
   torchscript exporter's scoped node names (``/features/features.0/conv/Conv``: components
   that extend the previous one, or are joined to it). A name that is not a module of the model
   is dropped.
2. `carry_modules` keeps the entries of the tensors the final graph still makes (onnxsim and the
   GAP lowering keep the names of the tensors they do not remove), and gives a tensor that a
   rewrite rule introduced (its node carries ``pkg.onnxscript.rewriter.rule_name``) the module
   of the rewritten tensor it feeds.
3. `capture_layers`: forward hooks on a float64 copy of the module catch the output of every
   module that made a tensor of the final graph (the last tensor of each module in graph order),
   cloned (an in-place ReLU would overwrite it); `folded_biases` adds what onnxsim folded into a
   convolution's bias (a hard sigmoid's ``+ 3``) to that convolution's output, so that the tensor
   is compared with what the graph computes, not left out, and records the scale of the module's
   own output to judge it at (the constant would otherwise swamp a change of the convolution).
4. `make_golden_layers`: the largest golden batch whose layers fit the budget (as float32), each
   layer verified against ONNX Runtime's CPU run of the final graph (a layer that does not match is
   left out with a warning: a wrong map must not make a bundle localize wrongly).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import torch

from onnxedge.export.layers_verify import bytes_per_row, golden_block, verified_layers
from onnxedge.export.sequential_means import sequential_means
from onnxedge.runtime.parity.layer_reference import ComputedLayerReference
from onnxedge.runtime.parity.layers import (
    DEFAULT_GOLDEN_LAYERS_BUDGET_MB,
    GOLDEN_LAYERS,
    ModuleRef,
    golden_layers_npz_bytes,
    layer_modules,
)
from onnxedge.runtime.parity.reference import Reference

log = logging.getLogger(__name__)

_SCOPES = "pkg.torch.onnx.name_scopes"
_RULE = "pkg.onnxscript.rewriter.rule_name"


# --- 1. and 2.: the map ------------------------------------------------------------------------


def tensor_modules(exported: onnx.ModelProto, module: torch.nn.Module) -> dict[str, ModuleRef]:
    """1. Tensor name -> the innermost module whose forward made it, from the exported graph."""
    named = dict(module.named_modules())
    found: dict[str, ModuleRef] = {}
    for node in exported.graph.node:
        name = _module_name(node)
        if not name or name not in named:
            continue
        ref = ModuleRef(name, type(named[name]).__name__)
        for output in node.output:
            if output:
                found[output] = ref
    return found


def _module_name(node: onnx.NodeProto) -> str | None:
    meta = {p.key: p.value for p in node.metadata_props}
    if _SCOPES in meta:  # dynamo
        try:
            scopes = ast.literal_eval(meta[_SCOPES])
        except (ValueError, SyntaxError):
            return None
        inner = [s for s in scopes[1:-1] if isinstance(s, str) and s]
        return inner[-1] if inner else None
    if node.name.startswith("/"):  # torchscript: /features/features.0/conv/Conv
        path = ""
        for part in node.name.strip("/").split("/")[:-1]:
            path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
        return path or None
    return None


def carry_modules(modules: Mapping[str, ModuleRef], final: onnx.ModelProto) -> dict[str, ModuleRef]:
    """2. The map for the final graph: entries of the tensors it still makes, and tensors a
    rewrite rule introduced named by the rewritten tensor they feed."""
    made = [(node, o) for node in final.graph.node for o in node.output if o]
    kept = {o: modules[o] for _, o in made if o in modules}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in final.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node, output in reversed(made):  # downstream first, so chains of new tensors resolve
        if output in kept or not any(p.key == _RULE for p in node.metadata_props):
            continue
        fed = [
            o
            for consumer in consumers.get(output, [])
            if any(p.key == _RULE for p in consumer.metadata_props)
            for o in consumer.output
            if o in kept
        ]
        if fed:
            kept[output] = kept[fed[0]]
    return {o: kept[o] for _, o in made if o in kept}


def module_outputs(final: onnx.ModelProto, modules: Mapping[str, ModuleRef]) -> dict[str, str]:
    """Module name -> the tensor its hook output is: the last one in graph order that the module
    or a module inside it made. A residual unit that adds and then calls its own ReLU module
    (pytorchcv's ``ResUnit``: ``self.activ(body + identity)``) returns the ReLU's tensor, not
    the Add it made itself; the Add is then no module's output and has no reference (it was
    compared with the ReLU's output, and localized as the first divergent layer).

    A tensor can be the output of several modules (a unit and the module it ends with): each is
    kept, since the innermost may return more than the tensor (a tuple, which no hook takes) where
    the one around it returns the tensor alone; `capture_layers` catches it once, `folded_biases`
    reads the innermost's weights."""
    last: dict[str, str] = {}
    for node in final.graph.node:
        for output in node.output:
            ref = modules.get(output)
            if ref is None:
                continue
            parts = ref.name.split(".")
            for end in range(len(parts), 0, -1):  # the module, and each module around it
                last[".".join(parts[:end])] = output
    return last


# --- 3.: the hooks ------------------------------------------------------------------------------


def capture_layers(
    module: torch.nn.Module,
    inputs: np.ndarray,
    outputs: Mapping[str, str],
    dtype: Any = np.float64,
) -> dict[str, np.ndarray]:
    """3. Tensor name -> the output of its module for ``inputs`` (``module`` is expected to be an
    eval-mode copy in ``dtype``: float64, or float32 for PyTorch's own rounding). Modules that
    return other than one tensor are skipped."""
    named = dict(module.named_modules())
    caught: dict[str, np.ndarray] = {}

    def hook(tensor: str) -> Any:
        def catch(_module: Any, _args: Any, out: Any) -> None:
            # the innermost module's hook runs first; those around it return the same tensor
            if isinstance(out, torch.Tensor) and tensor not in caught:
                caught[tensor] = out.detach().clone().numpy()

        return catch

    handles = [
        named[name].register_forward_hook(hook(tensor))
        for name, tensor in outputs.items()
        if name in named
    ]
    try:
        with torch.no_grad():
            module(torch.from_numpy(np.asarray(inputs, dtype=dtype)))
    finally:
        for handle in handles:
            handle.remove()
    return caught


def folded_biases(
    final: onnx.ModelProto, module: torch.nn.Module, outputs: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """3. Tensor name -> what the simplifier folded into its bias: the output of a Conv or Gemm
    whose weights are its module's, bit for bit, but whose bias is the module's plus a constant
    (onnxsim folds a hard sigmoid's ``+ 3`` into the convolution before it), is the module's
    output plus that constant per channel; the offset, shaped to add to it."""
    params = dict(module.named_parameters())
    inits = {i.name: i for i in final.graph.initializer}
    tensors = set(outputs.values())
    by_tensor: dict[str, str] = {}  # the innermost module of each tensor: its weights made it
    for name, t in outputs.items():
        if t not in by_tensor or name.count(".") > by_tensor[t].count("."):
            by_tensor[t] = name
    offsets: dict[str, np.ndarray] = {}
    for node in final.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not node.output:
            continue
        tensor = node.output[0]
        name = by_tensor.get(tensor) if tensor in tensors else None
        if name is None:
            continue
        prefix = f"{name}." if name else ""  # "": the module itself
        weight, bias = params.get(f"{prefix}weight"), params.get(f"{prefix}bias")
        if weight is None or bias is None or node.input[1] not in inits:
            continue
        if node.input[2] not in inits:
            continue
        w = onnx.numpy_helper.to_array(inits[node.input[1]])
        b = onnx.numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        ours = bias.detach().numpy()
        if w.shape != tuple(weight.shape) or b.shape != ours.shape:
            continue
        if not np.array_equal(w, weight.detach().numpy().astype(np.float32)):
            continue
        offset = b - ours.astype(np.float32).astype(np.float64)
        if np.any(offset != 0):
            shape = (1, -1) + (1,) * (len(w.shape) - 2 if node.op_type == "Conv" else 0)
            offsets[tensor] = offset.reshape(shape)
    return offsets


def float64_copy(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).double().eval()


# --- 4.: golden layers --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GoldenLayersResult:
    """What `make_golden_layers` made: the file's bytes (None where nothing was stored) and the
    manifest's ``layers`` block."""

    data: bytes | None
    block: dict[str, Any]


def float32_errors(
    module32: torch.nn.Module,
    inputs: np.ndarray,
    outputs: Mapping[str, str],
    layers: Mapping[str, np.ndarray],
) -> tuple[dict[str, float], dict[str, float]]:
    """PyTorch's own float32 rounding of each layer (before any folded constant): the largest
    distance from the float64 ``layers`` of the default float32 run of ``module32``, and of one
    whose global means are summed in sequence as ONNX Runtime's `GlobalAveragePool` sums them
    (`onnxedge.export.sequential_means`), the latter only where it is the larger: the tensors at
    and after a large mean, which the default run rounds far less than that engine does."""
    default = capture_layers(module32, inputs, outputs, np.float32)
    with sequential_means():
        in_sequence = capture_layers(module32, inputs, outputs, np.float32)

    def errors(run: Mapping[str, np.ndarray]) -> dict[str, float]:
        found = {
            t: float(np.max(np.abs(run[t].astype(np.float64) - a)))
            for t, a in layers.items()
            if t in run and run[t].shape == a.shape and a.size
        }
        return {t: e for t, e in found.items() if np.isfinite(e)}

    first = errors(default)
    larger = {t: e for t, e in errors(in_sequence).items() if e > first.get(t, np.inf)}
    return first, larger


def make_golden_layers(
    module: torch.nn.Module,
    final: onnx.ModelProto,
    modules: Mapping[str, ModuleRef],
    inputs: Mapping[int, np.ndarray],
    *,
    budget_mb: float | None = DEFAULT_GOLDEN_LAYERS_BUDGET_MB,
) -> GoldenLayersResult:
    """4. Golden layers of ``final`` for the largest of the golden batches ``inputs`` (batch size
    -> float32 inputs) that fits ``budget_mb`` (None: none stored), and the manifest's ``layers``
    block, which always holds the module map."""
    block: dict[str, Any] = {"modules": {t: m.to_dict() for t, m in modules.items()}}
    if budget_mb is None:
        block["golden"] = {"file": None, "reason": "--no-golden-layers was given"}
        return GoldenLayersResult(None, block)
    outputs = module_outputs(final, modules)
    if not outputs:
        block["golden"] = {
            "file": None,
            "reason": "no tensor of the final graph could be tied to a module of the model",
        }
        return GoldenLayersResult(None, block)
    module64 = float64_copy(module)
    first = inputs[min(inputs)]
    per_row = bytes_per_row(capture_layers(module64, first, outputs))
    budget = budget_mb * 1e6
    fitting = [b for b in inputs if b * per_row <= budget]
    if not fitting:
        block["golden"] = {
            "file": None,
            "reason": f"{per_row / 1e6:.1f} MB a row, over the budget of {budget_mb:g} MB "
            "(--golden-layers-budget)",
        }
        return GoldenLayersResult(None, block)
    batch = max(fitting)
    layers = capture_layers(module64, inputs[batch], outputs)
    module32 = copy.deepcopy(module).float().eval()
    errors, sequence = float32_errors(module32, inputs[batch], outputs, layers)
    scales = {}
    for tensor, offset in folded_biases(final, module64, outputs).items():
        if tensor in layers:  # judged at the scale of the module's own output
            rms = float(np.sqrt(np.mean(np.square(layers[tensor]))))
            scales.update({tensor: rms} if rms > 0 else {})
            layers[tensor] = layers[tensor] + offset
    layers, dropped = verified_layers(final, inputs[batch], layers, scales, errors, sequence)
    scales = {t: v for t, v in scales.items() if t in layers}
    errors = {t: v for t, v in errors.items() if t in layers}
    sequence = {t: v for t, v in sequence.items() if t in layers}
    tensors = tuple(t for t in (o for n in final.graph.node for o in n.output) if t in layers)
    description = f"PyTorch {torch.__version__}, float64 copy of the module, stored as float32"
    data = golden_layers_npz_bytes(
        tensors,
        {batch: layers},
        reference=description,
        scales=scales,
        float32_errors=errors,
        sequence_errors=sequence,
    )
    block["golden"] = golden_block(GOLDEN_LAYERS, batch, len(tensors), data, budget_mb, dropped)
    return GoldenLayersResult(data, block)


def live_layer_reference(
    module: torch.nn.Module,
    manifest: Mapping[str, Any],
    final: onnx.ModelProto,
    reference: Reference,
) -> ComputedLayerReference:
    """``--reference live``: ``module`` (rebuilt from the manifest) as the reference, its layers
    caught with hooks on a float64 copy, on the parity reference's inputs, at any batch size."""
    module64 = float64_copy(module)
    outputs = module_outputs(final, layer_modules(manifest))
    offsets = folded_biases(final, module64, outputs)

    def compute(inputs: np.ndarray) -> dict[str, np.ndarray]:
        layers = capture_layers(module64, inputs, outputs)
        return {t: a + offsets[t] if t in offsets else a for t, a in layers.items()}

    return ComputedLayerReference(
        compute,
        reference,
        description=f"PyTorch {torch.__version__} live, float64 copy of the module",
    )
