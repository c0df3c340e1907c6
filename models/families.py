"""Small hand-written CNN families, one per way a real network builds its head or body.

Each is a factory ``f(num_classes=..., **options) -> nn.Module`` taking any input size, usable
as ``onnxedge export --model onnxedge.models.families:NAME``. The tests export every family with
both exporters (so `make test` needs no model zoo), and `make zoo` runs them beside the pytorchcv
models they stand for:

- `depthwise_silu`: depthwise-separable convs, BatchNorm, SiLU, a ``mean(dim=(-2, -1),
  keepdim=True)`` head and a 1x1-conv classifier (EfficientNet/MobileNetV2 style).
- `squeeze_excite`: residual blocks with squeeze-excitation, which pool inside the network.
- `mobilenetv3_like`: hard-swish and hard-sigmoid SE blocks, and the pre-logits head of
  MobileNetV3: pool, 1x1 conv, hard-swish, dropout, then the 1x1-conv classifier. ``hswish``
  picks ``nn.Hardswish`` (``module``) or pytorchcv's ``x * relu6(x + 3) / 6`` (``written``).
- `convnext_like`: 7x7 depthwise convs, channels-last LayerNorm, GELU, and the ConvNeXt head
  ``x.mean((2, 3))``, LayerNorm, Linear.
- `grouped_dilated`: grouped and dilated convolutions, an ``nn.AdaptiveAvgPool2d(1)`` head.

``final`` picks what the model outputs: ``logits`` (default), ``softmax`` or ``sigmoid``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "convnext_like",
    "depthwise_silu",
    "grouped_dilated",
    "mobilenetv3_like",
    "squeeze_excite",
]


class _Final(nn.Module):
    """The model's last op: nothing (logits), a softmax over classes, or a sigmoid."""

    def __init__(self, final: str) -> None:
        super().__init__()
        if final not in ("logits", "softmax", "sigmoid"):
            raise ValueError(f"final: expected logits, softmax or sigmoid, found {final!r}")
        self.final = final

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.final == "softmax":
            return torch.softmax(x, dim=1)
        if self.final == "sigmoid":
            return torch.sigmoid(x)
        return x


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1):
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class DepthwiseSiLU(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16, final: str = "logits") -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, width, stride=2), nn.SiLU()]
        cin = width
        for cout, stride in ((width * 2, 2), (width * 4, 2), (width * 4, 1)):
            layers += [
                _conv_bn(cin, cin, stride=stride, groups=cin),  # depthwise
                nn.SiLU(),
                _conv_bn(cin, cout, k=1),  # pointwise
                nn.SiLU(),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(cin, num_classes, 1)
        self.final = _Final(final)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(-2, -1), keepdim=True)
        return self.final(torch.flatten(self.classifier(x), 1))


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, gate: nn.Module, squeeze: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, max(channels // squeeze, 4), 1)
        self.expand = nn.Conv2d(max(channels // squeeze, 4), channels, 1)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.expand(F.relu(self.reduce(self.pool(x))))
        return x * self.gate(s)


class _SEBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(cin, cout, stride=stride), nn.ReLU(), _conv_bn(cout, cout)
        )
        self.se = _SqueezeExcite(cout, nn.Sigmoid())
        self.skip = _conv_bn(cin, cout, k=1, stride=stride) if (cin, stride) != (cout, 1) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.skip is None else self.skip(x)
        return F.relu(self.se(self.body(x)) + skip)


class SqueezeExcite(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16, final: str = "logits") -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, width, stride=2), nn.ReLU())
        self.blocks = nn.Sequential(
            _SEBlock(width, width, 1),
            _SEBlock(width, width * 2, 2),
            _SEBlock(width * 2, width * 4, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)
        self.final = _Final(final)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.final(self.fc(torch.flatten(x, 1)))


class _WrittenHardSwish(nn.Module):
    """pytorchcv's HSwish: ``x * relu6(x + 3) / 6``, exported as Add, Clip, Mul and Div."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) / 6.0


def _hswish(kind: str) -> nn.Module:
    if kind == "module":
        return nn.Hardswish()
    if kind == "written":
        return _WrittenHardSwish()
    raise ValueError(f"hswish: expected module or written, found {kind!r}")


class MobileNetV3Like(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        width: int = 16,
        hswish: str = "written",
        final: str = "logits",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, width, stride=2), _hswish(hswish)]
        cin = width
        for cout, stride in ((width * 2, 2), (width * 3, 2)):
            expanded = cin * 3
            layers += [
                _conv_bn(cin, expanded, k=1),
                _hswish(hswish),
                _conv_bn(expanded, expanded, stride=stride, groups=expanded),
                _SqueezeExcite(expanded, nn.Hardsigmoid()),
                _hswish(hswish),
                _conv_bn(expanded, cout, k=1),
            ]
            cin = cout
        layers += [_conv_bn(cin, cin * 4, k=1), _hswish(hswish)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        # MobileNetV3's pre-logits head: 1x1 conv (with bias), hard-swish, dropout.
        self.pre_logits = nn.Sequential(
            nn.Conv2d(cin * 4, width * 8, 1), _hswish(hswish), nn.Dropout(dropout)
        )
        self.classifier = nn.Conv2d(width * 8, num_classes, 1)
        self.final = _Final(final)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_logits(self.pool(self.features(x)))
        return self.final(torch.flatten(self.classifier(x), 1))


class _ChannelsLastNorm(nn.Module):
    """ConvNeXt's LayerNorm over channels of an NCHW map, through a permute."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16, final: str = "logits") -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 4, stride=4), _ChannelsLastNorm(width))
        self.stage1 = _ConvNeXtBlock(width)
        self.down = nn.Sequential(
            _ChannelsLastNorm(width), nn.Conv2d(width, width * 2, 2, stride=2)
        )
        self.stage2 = _ConvNeXtBlock(width * 2)
        self.norm = nn.LayerNorm(width * 2, eps=1e-6)
        self.head = nn.Linear(width * 2, num_classes)
        self.final = _Final(final)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.final(self.head(self.norm(x.mean((2, 3)))))


class GroupedDilated(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16, final: str = "logits") -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, width * 2, stride=2),
            nn.ReLU(),
            _conv_bn(width * 2, width * 2, groups=4),  # grouped
            nn.ReLU(),
            _conv_bn(width * 2, width * 4, stride=2, groups=2),
            nn.ReLU(),
            _conv_bn(width * 4, width * 4, dilation=2),  # dilated
            nn.ReLU(),
            _conv_bn(width * 4, width * 4, groups=8, dilation=3),  # both
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)
        self.final = _Final(final)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.fc(torch.flatten(self.pool(self.features(x)), 1)))


def depthwise_silu(num_classes: int = 10, width: int = 16, final: str = "logits") -> nn.Module:
    return DepthwiseSiLU(num_classes, width, final)


def squeeze_excite(num_classes: int = 10, width: int = 16, final: str = "logits") -> nn.Module:
    return SqueezeExcite(num_classes, width, final)


def mobilenetv3_like(
    num_classes: int = 10, width: int = 16, hswish: str = "written", final: str = "logits"
) -> nn.Module:
    return MobileNetV3Like(num_classes, width, hswish, final)


def convnext_like(num_classes: int = 10, width: int = 16, final: str = "logits") -> nn.Module:
    return ConvNeXtLike(num_classes, width, final)


def grouped_dilated(num_classes: int = 10, width: int = 16, final: str = "logits") -> nn.Module:
    return GroupedDilated(num_classes, width, final)
