"""The seed model: the smile classifier of the textbook chapter on global average pooling.

The article's listing leaves out the ReLUs and the three 2x2 max-pools; the shapes it prints
(backbone ``[4, 256, 8, 8]``, pooled ``[4, 256]``) only hold with them, so they are restored here.
Layer names follow the book (``conv1`` ... ``fc``), so a state_dict trained from its listing loads.
"""

from __future__ import annotations

import torch
from torch import nn

# The spellings `make_gap_head` builds. The registry lists them without importing this module
# (it stays torch-free), as SMILE_CNN_HEADS; tests/test_models.py checks that the two agree.
HEADS = ("avgpool", "adaptive", "mean")


class SpatialMean(nn.Module):
    """``x.mean((2, 3))``: the GAP that timm and many hand-written models use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def make_gap_head(head: str) -> nn.Module:
    """The global-average-pooling head over an 8x8 feature map, in one of three spellings."""
    if head == "avgpool":
        return nn.AvgPool2d(kernel_size=8)  # the article's; exports as AveragePool
    if head == "adaptive":
        return nn.AdaptiveAvgPool2d(1)  # exports as ReduceMean under dynamo
    if head == "mean":
        return SpatialMean()  # exports as ReduceMean(keepdims=0)
    raise ValueError(f"unknown head {head!r}; expected one of: {', '.join(HEADS)}")


class SmileCNN(nn.Sequential):
    """3x64x64 image -> probability of a smile, shape [N, 1]."""

    BACKBONE_END = "relu4"  # the last layer of the feature extractor

    def __init__(self, head: str = "avgpool") -> None:
        super().__init__()
        self.head = head
        self.add_module("conv1", nn.Conv2d(3, 32, kernel_size=3, padding=1))
        self.add_module("relu1", nn.ReLU())
        self.add_module("pool1", nn.MaxPool2d(kernel_size=2))
        self.add_module("dropout1", nn.Dropout(p=0.5))
        self.add_module("conv2", nn.Conv2d(32, 64, kernel_size=3, padding=1))
        self.add_module("relu2", nn.ReLU())
        self.add_module("pool2", nn.MaxPool2d(kernel_size=2))
        self.add_module("dropout2", nn.Dropout(p=0.5))
        self.add_module("conv3", nn.Conv2d(64, 128, kernel_size=3, padding=1))
        self.add_module("relu3", nn.ReLU())
        self.add_module("pool3", nn.MaxPool2d(kernel_size=2))
        self.add_module("conv4", nn.Conv2d(128, 256, kernel_size=3, padding=1))
        self.add_module("relu4", nn.ReLU())
        self.add_module("pool4", make_gap_head(head))
        self.add_module("flatten", nn.Flatten())
        self.add_module("fc", nn.Linear(256, 1))
        self.add_module("sigmoid", nn.Sigmoid())

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map the GAP head pools: [N, 256, 8, 8] for a 64x64 input."""
        names = list(self._modules)
        for name in names[: names.index(self.BACKBONE_END) + 1]:
            x = self._modules[name](x)
        return x

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features, [N, 256]."""
        return self.flatten(self.pool4(self.backbone(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-sigmoid output, [N, 1]."""
        return self.fc(self.pooled(x))


def smile_cnn(head: str = "avgpool") -> SmileCNN:
    return SmileCNN(head=head)
