"""How far a perturbation of an exported graph moves the model's outputs in float64, over how far
float32 arithmetic on the model can be: whether a parity miss could have been caught at all.

`make parity-matrix` perturbs the ONNX graph (a layer's weights, one bias element) and expects
parity to fail. Where it does not, the question is whether any output check could: a change that
moves the float64 outputs less than PyTorch's own float32 kernels disagree with float64 (the
golden data's ``float32_spread``) is below float32 resolution. `float64_effect` answers it:

1. the initializers the perturbation changed, each mapped to the module's parameters: by name
   (``features.stage1.conv.weight``), or for a bias the exporter renamed, through the nodes it
   feeds (the bias of each module whose weight such a node takes: onnxsim shares one
   initializer among equal biases, so one change can move several);
2. the module in float64 with those parameters changed alike: by the same amounts where the
   initializer is the parameter plus a constant (bit for bit, or with a constant folded into it,
   as a hard sigmoid's +3 into the bias before it), by the same factor where the change scales
   the whole initializer (a convolution with a BatchNormalization folded into it); a change that
   maps to no parameter, or to one it cannot be carried to (a bias folded from a
   BatchNormalization), is not measured (None). Then the module runs on every batch of the
   reference;
3. per batch size, the largest move of the probabilities and of the logits (centred as parity
   compares them) from the float64 reference, each over its float32 spread; the larger of the two.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from onnxedge.export.golden import forward_with_logits
from onnxedge.runtime.bundle.outputs import centred_logits
from onnxedge.runtime.parity.reference import Reference


def _changes(
    original: onnx.ModelProto, changed: onnx.ModelProto
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """1.: each changed initializer's old and new value."""
    before = {i.name: numpy_helper.to_array(i) for i in original.graph.initializer}
    changes = {}
    for init in changed.graph.initializer:
        after = numpy_helper.to_array(init)
        old = before.get(init.name)
        if old is not None and old.shape == after.shape and not np.array_equal(old, after):
            changes[init.name] = (old.astype(np.float64), after.astype(np.float64))
    return changes


def _carry(param: torch.Tensor, old: np.ndarray, new: np.ndarray) -> bool:
    """2.: change ``param`` (float64) as ``old`` became ``new``; False where it cannot be."""
    if tuple(param.shape) != old.shape:
        return False
    offset = old - param.detach().numpy().astype(np.float32).astype(np.float64)
    if np.ptp(offset) == 0:  # the parameter, or it plus a folded constant
        param.add_(torch.from_numpy(new - old))
        return True
    nonzero = old != 0
    ratio = new[nonzero] / old[nonzero] if nonzero.any() else np.array([])
    if (
        ratio.size
        and np.allclose(ratio, ratio[0], rtol=1e-6)
        and np.array_equal(new == 0, ~nonzero)
    ):
        param.mul_(float(ratio[0]))
        return True
    return False


def _parameters(model: onnx.ModelProto, name: str, params: dict[str, Any]) -> list[str]:
    """1.: the module's parameters an initializer stands for (none: not measured)."""
    if name in params:
        return [name]
    found = []
    for node in model.graph.node:
        if len(node.input) > 2 and node.input[2] == name:
            bias = node.input[1].removesuffix("weight") + "bias"
            if not node.input[1].endswith(".weight") or bias not in params:
                return []
            found.append(bias)
    return found


def float64_effect(
    module: torch.nn.Module,
    original: onnx.ModelProto,
    changed: onnx.ModelProto,
    reference: Reference,
    kind: str,
) -> dict[int, float] | None:
    """3. for each batch size of ``reference``: the perturbation's largest float64 move of an
    output over that output's float32 spread (above 1: more than float32 itself moves it).
    None where a change maps to no parameter or the reference has no spread."""
    spread = reference.float32_spread
    if not spread or not spread.get("prob") or not spread.get("logits"):
        return None
    module64 = copy.deepcopy(module).double().eval()
    params = dict(module64.named_parameters())
    changes = _changes(original, changed)
    targets = {name: _parameters(original, name, params) for name in changes}
    if not changes or not all(targets.values()):
        return None
    with torch.no_grad():
        for name, (old, new) in changes.items():
            if not all(_carry(params[p], old, new) for p in targets[name]):
                return None
    effects = {}
    for size, batch in reference.batches.items():
        x = torch.from_numpy(np.asarray(batch.inputs, dtype=np.float64))
        prob, logits = forward_with_logits(module64, x, kind)
        moved_p = np.abs(np.asarray(prob, np.float64).reshape(batch.prob.shape) - batch.prob)
        moved_l = np.abs(
            centred_logits(np.asarray(logits).reshape(batch.logits.shape), kind)
            - centred_logits(batch.logits, kind)
        )
        effects[size] = float(max(moved_p.max() / spread["prob"], moved_l.max() / spread["logits"]))
    return effects
