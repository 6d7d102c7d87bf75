"""``tbn-ema``: test-time BatchNorm with running statistics updated as an EMA of test batches.

Each layer starts from the source statistics. For every batch it first updates them
the way train-mode PyTorch BatchNorm does (the official ``EMABatchNorm`` of the
mariodoebler/test-time-adaptation framework runs the layer in train mode, then in
eval mode)::

    running_mean <- (1 - m) * running_mean + m * batch_mean
    running_var  <- (1 - m) * running_var  + m * batch_var * n/(n-1)   (unbiased, as PyTorch)

and then normalizes the batch with the *updated* running statistics. Unlike ``tbn``
the state carries across batches; ``reset()`` returns to the source statistics.
m defaults to 0.1, PyTorch's BatchNorm momentum and that framework's default.
"""
from __future__ import annotations


import torch
from torch import nn

from .options import Option, OptionSet
from .policy import StatsPolicy, register_stats
from .stats import SourceStatsMixin, normalize_with_batch_stats, unbiased_factor


class EmaBatchNorm(SourceStatsMixin, nn.Module):
    """BatchNorm that normalizes with an EMA of test-batch statistics, started at the source."""

    def __init__(self, bn: nn.Module, momentum: float) -> None:
        super().__init__()
        self.copy_from_bn(bn)
        self.momentum = float(momentum)
        self.register_buffer("running_mean", self.source_mean.clone())
        self.register_buffer("running_var", self.source_var.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize_with_batch_stats(x, self.update, self.weight, self.bias, self.eps)

    @torch.no_grad()
    def update(self, mean: torch.Tensor, var: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(var * unbiased_factor(x), self.momentum)
        return self.running_mean, self.running_var

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}"


@register_stats
class TestBatchNormEma(StatsPolicy):
    name = "tbn-ema"
    summary = "test-time BN with an EMA of test-batch statistics started at the source (momentum m)"
    paper = "Schneider et al., NeurIPS 2020 (EMA variant); mariodoebler/test-time-adaptation EMABatchNorm"
    options = OptionSet("tbn-ema", (
        Option("momentum", float, 0.1, "EMA rate m of the running statistics", low=0, high=1),
    ))
    min_batch_size = 2
    min_batch_reason = "one image gives no batch variance for fully connected BatchNorm1d layers"

    @classmethod
    def make_layer(cls, bn: nn.Module, momentum: float = 0.1) -> nn.Module:
        return EmaBatchNorm(bn, momentum)
