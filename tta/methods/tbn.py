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

import torch
from torch import nn

from .base import Adapter
from .bn_swap import replace_batchnorm
from .registry import register_method
from .stats import SourceStatsMixin, batch_stats, normalize


class PriorBatchNorm(SourceStatsMixin, nn.Module):
    """BatchNorm whose statistics are a prior-weighted mix of source and test batch."""

    def __init__(self, bn: nn.Module, prior: float) -> None:
        super().__init__()
        self.copy_from_bn(bn)
        self.prior = float(prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = batch_stats(x)
        if self.prior > 0:
            w = self.prior / (self.prior + x.shape[0])
            mean = w * self.source_mean + (1 - w) * mean
            var = w * self.source_var + (1 - w) * var
        return normalize(x, mean, var, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, prior={self.prior}"


@register_method
class TestBatchNorm(Adapter):
    name = "tbn"
    summary = "test-time normalization: batch statistics mixed with a source prior N/(N+n)"
    paper = "Schneider et al., NeurIPS 2020; Nado et al. 2020 (N=0)"
    dataset_defaults = {"default": {"prior": 0}}
    min_batch_size = 2

    def __init__(self, model: nn.Module, *, prior: float = 0, channels_last: bool | None = None) -> None:
        super().__init__(model, channels_last=channels_last)
        if prior < 0:
            raise ValueError(f"prior must be >= 0 (a pseudo-count of source samples), got {prior}")
        self.prior = float(prior)
        # One image has no batch statistics across samples; with a prior it still adapts.
        self.min_batch_size = 1 if self.prior > 0 else 2
        self.model.eval()
        replace_batchnorm(self.model, lambda bn: PriorBatchNorm(bn, self.prior), self.name)
        self.snapshot()

    def adapt_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def hparams(self) -> dict[str, float]:
        return {"prior": self.prior}
