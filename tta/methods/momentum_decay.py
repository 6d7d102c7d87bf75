"""``momentum-decay``: source-free BN adaptation with exponentially decaying momentum.

After Liu, Xing, Yang, El Fakhri, Woo (MICCAI 2021, arXiv 2106.12497): "domain-specific
low-order batch statistics, i.e., mean and variance, are gradually adapted with an
exponential momentum decay scheme". No code and only the abstract were available, so
this is a reconstruction (unverified, docs/methods.md), for target batch k = 0, 1, 2, ...::

    eta_k = eta_0 * exp(-decay * k)
    mean <- (1 - eta_k) mean + eta_k batch_mean
    var  <- (1 - eta_k) var  + eta_k batch_var * n/(n-1)     (PyTorch's running-variance convention)

starting from the source statistics; the batch is then normalized with the updated
statistics. The statistics adapt fast at first and freeze: with the defaults
(eta_0 = the source BN momentum 0.1, decay = 1) the source keeps about 85% of the
weight for good. That suits one fixed target domain, as in the paper, and is fragile
for continual streams. The paper's channel-transferability weighted consistency loss
on gamma, beta (plus entropy) is the gradient method ``momentum-decay-hbs``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._moments import SourceStatsMixin, normalize_with_batch_stats, unbiased_factor
from ._options import Option, OptionSet
from ._stats_policy import StatsPolicy, register_stats


class DecayingMomentumBatchNorm(SourceStatsMixin, nn.Module):
    """BatchNorm whose running statistics move with momentum eta_0 * exp(-decay * k)."""

    def __init__(self, bn: nn.Module, eta0: float | None, decay: float) -> None:
        super().__init__()
        self.copy_from_bn(bn)
        self.eta0 = self.source_momentum if eta0 is None else float(eta0)
        self.decay = float(decay)
        self.register_buffer("running_mean", self.source_mean.clone())
        self.register_buffer("running_var", self.source_var.clone())
        self.register_buffer("step", torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize_with_batch_stats(x, self.update, self.weight, self.bias, self.eps)

    @torch.no_grad()
    def update(self, mean: torch.Tensor, var: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eta = torch.exp(self.step * -self.decay).mul_(self.eta0)
        self.running_mean.lerp_(mean, eta)
        self.running_var.lerp_(var * unbiased_factor(x), eta)
        self.step.add_(1.0)
        return self.running_mean, self.running_var

    def extra_repr(self) -> str:
        return f"{self.num_features}, eta0={self.eta0}, decay={self.decay}"


@register_stats
class MomentumDecayPolicy(StatsPolicy):
    name = "momentum-decay"
    summary = "source-free BN: running statistics updated with momentum eta0 * exp(-decay * k)"
    paper = "Liu et al., MICCAI 2021 (arXiv 2106.12497)"
    options = OptionSet("momentum-decay", (
        Option("eta0", float, None, "initial momentum (None: the source BN momentum)", low=0, high=1, nullable=True),
        Option("decay", float, 1.0, "exponential decay rate per batch", low=0, high=math.inf),
    ))
    min_batch_size = 2
    min_batch_reason = "one image gives no batch variance for fully connected BatchNorm1d layers"
    notes = "reconstructed from the abstract (no code): eta0=None takes the source BN momentum; + loss: momentum-decay-hbs"

    @classmethod
    def make_layer(cls, bn: nn.Module, eta0: float | None, decay: float) -> nn.Module:
        return DecayingMomentumBatchNorm(bn, eta0, decay)
