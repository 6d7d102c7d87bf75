"""Group Normalization (Wu & He, ECCV 2018) with a group count that fits any width."""
from __future__ import annotations

import math

from torch import nn

from ..errors import InputError


def fitted_groups(num_channels: int, num_groups: int) -> int:
    """``num_groups`` if it divides ``num_channels``, else their greatest common divisor.

    CIFAR ResNets have 16-channel stages where the paper's G = 32 cannot apply;
    gcd(32, 16) = 16 groups of one channel each there.
    """
    if num_groups < 1:
        raise InputError(f"num_groups must be >= 1, got {num_groups}; e.g. num_groups=32")
    return math.gcd(num_channels, num_groups)


def group_norm(num_channels: int, num_groups: int = 32, eps: float = 1e-5, affine: bool = True) -> nn.GroupNorm:
    """nn.GroupNorm with the paper's default G = 32 (fitted to the width, see ``fitted_groups``)."""
    return nn.GroupNorm(fitted_groups(num_channels, num_groups), num_channels, eps=eps, affine=affine)
