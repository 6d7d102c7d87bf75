"""CIFAR ResNet-20/32/44/56 (He et al. 2016, option-A shortcuts).

The layer names match the checkpoints of akamaster/pytorch_resnet_cifar10 (the
shared ``resnet{20,32,44,56}.th``): ``conv1, bn1, layer{1,2,3}.{i}.{conv,bn}{1,2},
linear``. Inputs are [0,1] RGB; ImageNet mean/std normalization happens inside.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..norms import MakeNorm
from ._input_norm import IMAGENET_MEAN, IMAGENET_STD, InputNormalize



class _PadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels, no parameters."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, norm: MakeNorm) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm(planes)
        self.shortcut: nn.Module = (
            _PadShortcut(planes) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs with 16/32/64 channels."""

    def __init__(self, depth: int, num_classes: int = 10, norm: MakeNorm = nn.BatchNorm2d) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.normalize = InputNormalize(IMAGENET_MEAN, IMAGENET_STD)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = norm(16)
        self.layer1 = self._stage(16, 16, n, 1, norm)
        self.layer2 = self._stage(16, 32, n, 2, norm)
        self.layer3 = self._stage(32, 64, n, 2, norm)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int, norm: MakeNorm) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride, norm)]
        blocks += [BasicBlock(planes, planes, 1, norm) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)
