"""A PyTorch float32 run whose global means are summed in sequence, as ONNX Runtime's CPU
`GlobalAveragePool` sums them.

PyTorch's float32 mean over a feature map sums in blocks and is about as exact as float32 allows
(relative error 1e-7 over 112 x 112 values); ONNX Runtime's `GlobalAveragePool` on the CPU, where
the channels fill its blocked layout (NCHWc: 16 channels a block with AVX-512), adds a channel's
values one after the other in float32 and divides by their count: 20-30 times PyTorch's error
over the same 12,544 values, the same bits as `sequential_mean` (its other kernel, for other
channel counts, is nearer float64). Parity's bounds take their rounding from PyTorch's float32
runs, so with the default run alone a squeeze-excitation model's tensors after a large mean were
held to less than ONNX Runtime rounds them (efficientnet_b0 with ImageNet's statistics at 0.996
of a layer bound: docs/PARITY.md). `sequential_means` is one more float32 run for the golden
layers' rounding (`onnxedge.export.layers.float32_errors`; the outputs' spread does not take it):
within it, a float32 mean over whole dimensions
(``torch.mean``, ``Tensor.mean``, ``adaptive_avg_pool2d`` to 1 x 1, an ``avg_pool2d`` whose kernel
covers the map) is `sequential_mean`; everything else, float64 included, runs as it would.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# A mean over more values than this runs as PyTorch's (a Python loop of that many additions).
MAX_TERMS = 1 << 18


def sequential_mean(x: torch.Tensor, dims: Sequence[int], keepdim: bool = False) -> torch.Tensor:
    """The mean of ``x`` over ``dims``, its terms added one after the other in row-major order in
    ``x``'s dtype, then divided by their count."""
    rank = x.dim()
    dims = sorted({d % rank for d in dims})
    kept = [d for d in range(rank) if d not in dims]
    terms = x.permute(*kept, *dims).reshape(*(x.shape[d] for d in kept), -1)
    total = terms[..., 0].clone()
    for i in range(1, terms.shape[-1]):
        total += terms[..., i]
    mean = total / terms.shape[-1]
    if keepdim:
        for d in dims:
            mean = mean.unsqueeze(d)
    return mean


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _global_mean(
    func: Any, args: tuple, kwargs: dict
) -> tuple[torch.Tensor, list[int], bool] | None:
    """The float32 tensor, dimensions and keepdim of a global mean that ``func(*args, **kwargs)``
    computes, or None where it is not one."""
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() < 2:
        return None
    rest = list(args[1:])
    if func in (torch.mean, torch.Tensor.mean):
        dim = rest[0] if rest else kwargs.get("dim")
        keepdim = rest[1] if len(rest) > 1 else kwargs.get("keepdim", False)
        if dim is None or kwargs.get("dtype") is not None or len(rest) > 2:
            return None
        dims = [dim] if isinstance(dim, int) else list(dim)
        return (x, dims, bool(keepdim)) if dims else None
    if func is F.adaptive_avg_pool2d and x.dim() >= 3:
        size = rest[0] if rest else kwargs.get("output_size")
        return (x, [-2, -1], True) if size is not None and _pair(size) == (1, 1) else None
    if func is F.avg_pool2d and x.dim() >= 3:
        names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor")
        options = dict(zip(names, rest, strict=False)) | kwargs
        kernel = _pair(options.get("kernel_size", 0))
        padding = _pair(options.get("padding", 0))
        divisor = options.get("divisor", options.get("divisor_override"))
        if kernel == tuple(x.shape[-2:]) and padding == (0, 0) and not divisor:
            return x, [-2, -1], True
    return None


class _SequentialMeans(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        found = _global_mean(func, args, kwargs)
        if found is not None:
            x, dims, keepdim = found
            if 1 < math.prod(x.shape[d] for d in dims) <= MAX_TERMS:
                return sequential_mean(x, dims, keepdim)
        return func(*args, **kwargs)


@contextlib.contextmanager
def sequential_means() -> Iterator[None]:
    """Within it, PyTorch's float32 global means are `sequential_mean` (see the module)."""
    with _SequentialMeans():
        yield


__all__ = ["MAX_TERMS", "sequential_mean", "sequential_means"]
