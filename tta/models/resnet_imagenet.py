"""torchvision ResNet-50 with ImageNet input normalization inside.

Subclassing keeps torchvision's parameter names, so the IMAGENET1K_V1 file
``resnet50-0676ba61.pth`` (RobustBench ``Standard_R50``) loads directly.
"""
from __future__ import annotations


import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from ..norms import MakeNorm
from ._input_norm import IMAGENET_MEAN, IMAGENET_STD, InputNormalize


class NormalizedResNet50(ResNet):
    def __init__(self, num_classes: int = 1000, norm: MakeNorm = nn.BatchNorm2d) -> None:
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, norm_layer=norm)
        self.normalize = InputNormalize(IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.normalize(x))
