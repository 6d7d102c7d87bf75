"""Shared tensor helpers for normalization-statistics methods."""
from __future__ import annotations

import torch
from torch import nn


def reduce_dims(x: torch.Tensor) -> list[int]:
    """Dimensions BatchNorm reduces over: all but the channel dimension 1."""
    return [0] + list(range(2, x.dim()))


def batch_stats(x: torch.Tensor, unbiased: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and variance over (N, *spatial), as BatchNorm computes them."""
    var, mean = torch.var_mean(x, dim=reduce_dims(x), correction=int(unbiased))
    return mean, var


def normalize(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """y = weight * (x - mean) / sqrt(var + eps) + bias with per-channel (C,) statistics."""
    return torch.nn.functional.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)


class SourceStatsMixin:
    """Copies a BatchNorm's affine parameters and source statistics into the new layer."""

    def copy_from_bn(self, bn: nn.Module) -> None:
        self.num_features = bn.num_features
        self.eps = bn.eps
        self.weight = None if bn.weight is None else nn.Parameter(bn.weight.detach().clone())
        self.bias = None if bn.bias is None else nn.Parameter(bn.bias.detach().clone())
        if bn.running_mean is None:
            raise ValueError("BatchNorm layer has no running statistics (track_running_stats=False)")
        self.register_buffer("source_mean", bn.running_mean.detach().clone())
        self.register_buffer("source_var", bn.running_var.detach().clone())
