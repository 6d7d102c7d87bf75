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


def instance_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, channel) mean and biased variance over the spatial dims: two (B, C) tensors."""
    var, mean = torch.var_mean(x, dim=list(range(2, x.dim())), correction=0)
    return mean, var


def unbiased_factor(x: torch.Tensor) -> float:
    """n/(n-1) with n the number of values per channel, PyTorch's running-variance correction."""
    n = x.numel() // x.shape[1]
    return n / (n - 1) if n > 1 else 1.0


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


def normalize_per_sample(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """The same with per-sample (B, C) statistics, as one fused multiply-add over ``x``."""
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    view = scale.shape + (1,) * (x.dim() - 2)
    return torch.addcmul(shift.view(view), x, scale.view(view))


class SourceStatsMixin:
    """Copies a BatchNorm's affine parameters and source statistics into the new layer."""

    def copy_from_bn(self, bn: nn.Module) -> None:
        self.num_features = bn.num_features
        self.eps = bn.eps
        # PyTorch's momentum=None means a cumulative average; 0.1 is its default EMA rate.
        self.source_momentum = 0.1 if bn.momentum is None else float(bn.momentum)
        self.weight = None if bn.weight is None else nn.Parameter(bn.weight.detach().clone())
        self.bias = None if bn.bias is None else nn.Parameter(bn.bias.detach().clone())
        if bn.running_mean is None:
            raise ValueError("BatchNorm layer has no running statistics (track_running_stats=False)")
        self.register_buffer("source_mean", bn.running_mean.detach().clone())
        self.register_buffer("source_var", bn.running_var.detach().clone())


class SourceBatchNorm(SourceStatsMixin, nn.Module):
    """Eval-mode BatchNorm frozen at the source statistics, whatever ``self.training`` says."""

    def __init__(self, bn: nn.Module) -> None:
        super().__init__()
        self.copy_from_bn(bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.source_mean, self.source_var, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, frozen source statistics"
