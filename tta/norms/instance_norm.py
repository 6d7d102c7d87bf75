"""Instance Normalization (Ulyanov et al. 2016): per sample and channel, no running statistics."""
from __future__ import annotations

from torch import nn


def instance_norm(num_channels: int, eps: float = 1e-5, affine: bool = True) -> nn.InstanceNorm2d:
    """Per-(sample, channel) statistics at train and test time, with a per-channel affine."""
    return nn.InstanceNorm2d(num_channels, eps=eps, affine=affine, track_running_stats=False)
