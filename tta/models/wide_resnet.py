"""WideResNet-28-10, laid out as RobustBench's ``Standard`` CIFAR-10 model.

Parameter names follow RobustBench's ``model_zoo/architectures/wide_resnet.py``
(``conv1, block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}, bn1, fc``) so a
downloaded ``Standard.pt`` loads directly. The model takes [0,1] input with no
normalization, as the checkpoint was trained.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn
from ..norms import MakeNorm



class WideBasic(nn.Module):
    """Pre-activation block; when the width changes the shortcut sees the activated input."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: MakeNorm) -> None:
        super().__init__()
        self.bn1 = norm(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == planes
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, planes, 1, stride, 0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class _Group(nn.Module):
    def __init__(self, n: int, in_planes: int, planes: int, stride: int, norm: MakeNorm) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[WideBasic(in_planes if i == 0 else planes, planes, stride if i == 0 else 1, norm) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(
        self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, norm: MakeNorm = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = _Group(n, widths[0], widths[1], 1, norm)
        self.block2 = _Group(n, widths[1], widths[2], 2, norm)
        self.block3 = _Group(n, widths[2], widths[3], 2, norm)
        self.bn1 = norm(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
