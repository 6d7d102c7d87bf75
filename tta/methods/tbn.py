"""``tbn``: test-time normalization with a source prior (Schneider et al., NeurIPS 2020).

Statistics are mixed per batch and nothing is kept across batches::

    mean = N/(N+n) * source_mean + n/(N+n) * batch_mean
    var  = N/(N+n) * source_var  + n/(N+n) * batch_var

with n the number of images in the batch and N the prior pseudo-count.
N = 0 is pure test-batch statistics ("BN-1", Nado et al.'s prediction-time BN,
TENT's ``norm`` baseline); N -> infinity is the source model.

The batch variance is the *biased* one, as train-mode BatchNorm normalizes with,
so N = 0 equals train-mode BN exactly. robusta's ``BayesianBatchNorm`` mixes the
unbiased variance instead; the two differ by a factor n·H·W/(n·H·W − 1), under
0.04% for any CIFAR layer at batch 64.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._moments import SourceStatsMixin, grouped_batch_stats, normalize_grouped, normalize_with_batch_stats
from ._options import Option, OptionSet
from ._stats_policy import StatsPolicy, register_stats


class PriorBatchNorm(SourceStatsMixin, nn.Module):
    """BatchNorm whose statistics are a prior-weighted mix of source and test batch."""

    def __init__(self, bn: nn.Module, prior: float) -> None:
        super().__init__()
        self.copy_from_bn(bn)
        self.prior = float(prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prior == 0:  # train-mode BatchNorm without running statistics (TENT's BN), one fused kernel
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return normalize_with_batch_stats(x, self.mix, self.weight, self.bias, self.eps)

    def forward_grouped(self, x: torch.Tensor, n_groups: int) -> torch.Tensor:
        """Each of ``n_groups`` consecutive equal groups of samples normalized with its own statistics,
        as separate calls would (CoTTA's augmented views in one forward, ``tta.methods._view_forward``)."""
        mean, var = grouped_batch_stats(x, n_groups)
        if self.prior:
            mean, var = self.mix_n(mean, var, x.shape[0] // n_groups)
        return normalize_grouped(x, mean, var, self.weight, self.bias, self.eps)

    def mix(self, mean: torch.Tensor, var: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mix_n(mean, var, x.shape[0])

    def mix_n(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch statistics of n samples mixed with the source's, weight N/(N+n) on the source."""
        w = self.prior / (self.prior + n)
        return torch.lerp(mean, self.source_mean, w), torch.lerp(var, self.source_var, w)

    def extra_repr(self) -> str:
        return f"{self.num_features}, prior={self.prior}"


@register_stats
class TestBatchNormPolicy(StatsPolicy):
    name = "tbn"
    summary = "test-time normalization: batch statistics mixed with a source prior N/(N+n)"
    paper = "Schneider et al., NeurIPS 2020; Nado et al. 2020 (N=0)"
    options = OptionSet("tbn", (
        Option("prior", float, 0.0, "source pseudo-count N (0: pure batch statistics)", low=0, high=math.inf),
    ))
    min_batch_size = 2
    min_batch_reason = "with prior=0 one image has no batch statistics; pass prior>0"

    @classmethod
    def batch_minimum(cls, options: dict[str, Any]) -> int:
        # One image has no statistics across samples; with a prior it still adapts.
        return 1 if options["prior"] > 0 else 2

    @classmethod
    def make_layer(cls, bn: nn.Module, prior: float) -> nn.Module:
        return PriorBatchNorm(bn, prior)
