"""The model's state while it trains (`onnxedge.models.train`): its initialisation
(`init_weights`), the BatchNorms added after its convolutions (`add_batchnorm`), their statistics
recomputed before each validation (`recalibrate_batchnorm`) and folded back into the convolutions
when a checkpoint is written (`fold_batchnorm`), so that the checkpoint holds the plain model."""

from __future__ import annotations

import torch
from torch import nn

from onnxedge.runtime.errors import OnnxEdgeError


def init_weights(model: nn.Module, method: str, sample: torch.Tensor | None = None) -> None:
    """``kaiming``: He-normal weights for the convolutions (fan-in, ReLU gain), Xavier for the
    final linear layer, zero biases. ``pytorch``: leave PyTorch's default initialisation.
    ``data``: ``kaiming``, then each convolution, in order, rescaled and shifted so that every
    output channel has mean 0 and variance 1 over ``sample`` (a batch of training images, in eval
    mode), which takes out the inputs' offset (they lie in [0, 1], not around 0) without changing
    the model or its preprocessing; the final layer starts small (logits near 0)."""
    if method == "pytorch":
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    if method != "data":
        return
    if sample is None:
        raise ValueError("init 'data' needs a sample batch")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for module in [m for m in model.modules() if isinstance(m, nn.Conv2d)]:
            caught: list[torch.Tensor] = []
            handle = module.register_forward_hook(lambda _m, _a, out, c=caught: c.append(out))
            try:
                model(sample)
            finally:
                handle.remove()
            out = caught[0]
            mean = out.mean(dim=(0, 2, 3))
            std = out.std(dim=(0, 2, 3)).clamp_min(1e-6)
            module.weight.div_(std[:, None, None, None])
            module.bias.sub_(mean).div_(std)
        fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        fc.weight.mul_(0.1)
    model.train(was_training)


def add_batchnorm(model: nn.Module) -> nn.Module:
    """Follow each convolution that is a direct child of ``model`` with a BatchNorm2d, in place:
    the child ``convN`` becomes ``Sequential(conv, BatchNorm2d)`` under the same name, so the
    model's forward (a Sequential's, or one that calls its children by name) is unchanged."""
    convs = [name for name, m in model.named_children() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise OnnxEdgeError(
            f"--norm batch: expected convolutions among {type(model).__name__}'s layers, found "
            "none; use --norm none"
        )
    for name in convs:
        conv = getattr(model, name)
        setattr(model, name, nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels)))
    return model


def fold_batchnorm(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the model without its training BatchNorms (`add_batchnorm`): each
    ``Sequential(conv, BatchNorm2d)`` folded into one convolution with the BatchNorm's running
    statistics, ``w * g / sqrt(v + eps)`` and ``(b - m) * g / sqrt(v + eps) + beta`` (computed
    in float64), which is what the pair computes in eval mode. Other entries are copied."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, module in model.named_children():
        pair = isinstance(module, nn.Sequential) and len(module) == 2
        if not (
            pair and isinstance(module[0], nn.Conv2d) and isinstance(module[1], nn.BatchNorm2d)
        ):
            continue
        conv, bn = module[0], module[1]
        for key in list(state):
            if key.startswith(f"{name}."):
                del state[key]
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        weight = conv.weight.double() * scale[:, None, None, None]
        shift = (bias - bn.running_mean.double()) * scale + bn.bias.double()
        state[f"{name}.weight"] = weight.to(conv.weight.dtype).detach()
        state[f"{name}.bias"] = shift.to(conv.weight.dtype).detach()
    return state


def recalibrate_batchnorm(model: nn.Module, sample: torch.Tensor, batch_size: int = 64) -> None:
    """Recompute every BatchNorm's running statistics over ``sample`` with the weights as they
    are (a cumulative average over its batches, dropouts off), so that the eval-mode model, and
    the folded one, uses statistics of this model rather than an average lagging behind a
    fast-moving one. No-op without BatchNorms."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average
        with torch.no_grad():
            for chunk in sample.split(batch_size):
                model(chunk)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)


__all__ = ["add_batchnorm", "fold_batchnorm", "init_weights", "recalibrate_batchnorm"]
