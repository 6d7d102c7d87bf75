"""ResNeXt-29 (32x4d) from AugMix, laid out as RobustBench's ``Hendrycks2020AugMix_ResNeXt``.

Names follow RobustBench's ``model_zoo/cifar100.py`` (``conv_1_3x3, bn_1,
stage_{1,2,3}.{i}.{conv_reduce,bn_reduce,conv_conv,bn,conv_expand,bn_expand,downsample},
classifier``, plus the ``mu``/``sigma`` input-normalization buffers, 0.5 each).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from ..norms import MakeNorm



class ResNeXtBottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, in_planes: int, planes: int, cardinality: int, base_width: int, stride: int, norm: MakeNorm
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * base_width / 64.0)) * cardinality
        self.conv_reduce = nn.Conv2d(in_planes, width, 1, bias=False)
        self.bn_reduce = norm(width)
        self.conv_conv = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn = norm(width)
        self.conv_expand = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn_expand = norm(planes * 4)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes * 4, 1, stride, bias=False), norm(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(residual + out)


class CifarResNeXt(nn.Module):
    def __init__(
        self,
        depth: int = 29,
        cardinality: int = 4,
        base_width: int = 32,
        num_classes: int = 100,
        norm: MakeNorm = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if (depth - 2) % 9:
            raise ValueError(f"ResNeXt depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        self.register_buffer("mu", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("sigma", torch.full((1, 3, 1, 1), 0.5))
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = norm(64)
        in_planes = 64
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2)):
            blocks = []
            for i in range(n):
                blocks.append(
                    ResNeXtBottleneck(in_planes, planes, cardinality, base_width, stride if i == 0 else 1, norm)
                )
                in_planes = planes * 4
            stages.append(nn.Sequential(*blocks))
        self.stage_1, self.stage_2, self.stage_3 = stages
        self.classifier = nn.Linear(256 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mu) / self.sigma
        x = F.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))
