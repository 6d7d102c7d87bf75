"""Batch-Channel Normalization (Qiao et al., "Rethinking Normalization and Elimination
Singularity in Neural Networks", 2019), meant to run after Weight-Standardized convs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .group_norm import fitted_groups


class EstBN(nn.BatchNorm2d):
    """Micro-batch BN of the BCN paper: always normalizes with running statistics.

    In training, before normalizing, the running mean moves toward the batch
    mean and the running variance toward the batch's mean squared deviation
    from the *previous* running mean, both at rate ``estbn_moving_speed``; no
    gradient flows through the statistics (official ``EstBN``). The official
    class starts the speed at 0 and lets the training script set it; tta's
    default is 0.1, BatchNorm's momentum.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, estbn_moving_speed: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=estbn_moving_speed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                ms = self.momentum
                mean = x.mean(dim=(0, 2, 3))
                var = (x - self.running_mean.view(1, -1, 1, 1)).square().mean(dim=(0, 2, 3))
                self.running_mean.mul_(1 - ms).add_(ms * mean)
                self.running_var.mul_(1 - ms).add_(ms * var)
                self.num_batches_tracked.add_(1)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class BatchChannelNorm2d(nn.Module):
    """out = BN(x) with per-channel affine; then, per sample, each of G channel groups is
    normalized over (C/G, H, W) (biased variance, ε = 1e-5) and scaled by a per-group
    affine w_g, b_g. The BN part (``self.bn``) carries running statistics, so BN
    statistics adapters act on it; the channel part is always per sample.

    Defaults follow the official code: G = 32 (fitted to the width as in
    ``gn``), ε = 1e-5, ``estimate=False`` (plain BN; ``True`` uses EstBN for
    micro-batches). Use with WS convs: ``norm_factory("bcn")`` converts them.
    """

    prefers_nchw = True  # F.group_norm has no fast channels_last CPU kernel

    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5, momentum: float = 0.1,
                 estimate: bool = False, estbn_moving_speed: float = 0.1) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.num_groups = fitted_groups(num_channels, num_groups)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.num_groups))
        self.bias = nn.Parameter(torch.zeros(self.num_groups))
        self.bn: nn.BatchNorm2d = (
            EstBN(num_channels, eps, estbn_moving_speed) if estimate else nn.BatchNorm2d(num_channels, eps, momentum)
        )

    def extra_repr(self) -> str:
        return f"{self.num_channels}, num_groups={self.num_groups}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise InputError(f"BatchChannelNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}")
        y = self.bn(x)
        # per-group affine == per-channel affine with each group's value repeated: one fused GN kernel
        per_group = self.num_channels // self.num_groups
        weight = self.weight.repeat_interleave(per_group)
        bias = self.bias.repeat_interleave(per_group)
        return F.group_norm(y, self.num_groups, weight, bias, self.eps)
