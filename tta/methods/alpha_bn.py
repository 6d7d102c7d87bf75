"""``alpha-bn``: α-BN, a fixed mix of source and test-batch statistics (You et al., arXiv 2110.04065).

Convention used here (the paper's symbol could not be checked, so the option is named
for what it weighs)::

    mean = w * source_mean + (1 - w) * batch_mean
    var  = w * source_var  + (1 - w) * batch_var        w = source_weight

``source_weight = 1`` is the source model, ``0`` is pure batch statistics (``tbn`` with
N = 0). Stateless: nothing carries over between batches. The batch variance is the
biased one, as in ``tbn``; mariodoebler/test-time-adaptation's ``AlphaBatchNorm`` mixes
the unbiased variance (factor n/(n-1), negligible for conv layers).

No official code exists. The default ``source_weight = 0.9`` is that framework's
``BN.ALPHA = 0.1`` weight on the test statistics, which it runs at batch size 1.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._moments import SourceStatsMixin, normalize_with_batch_stats
from ._options import Option, OptionSet
from ._stats_policy import StatsPolicy, register_stats


class AlphaBatchNorm(SourceStatsMixin, nn.Module):
    """BatchNorm with statistics ``w * source + (1 - w) * batch``."""

    def __init__(self, bn: nn.Module, source_weight: float) -> None:
        super().__init__()
        self.copy_from_bn(bn)
        self.source_weight = float(source_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize_with_batch_stats(x, self.mix, self.weight, self.bias, self.eps)

    def mix(self, mean: torch.Tensor, var: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.source_weight
        return torch.lerp(mean, self.source_mean, w), torch.lerp(var, self.source_var, w)

    def extra_repr(self) -> str:
        return f"{self.num_features}, source_weight={self.source_weight}"


@register_stats
class AlphaBNPolicy(StatsPolicy):
    name = "alpha-bn"
    summary = "α-BN: statistics = source_weight * source + (1 - source_weight) * batch, stateless"
    paper = "You, Li, Zhao, arXiv 2110.04065 (2021)"
    options = OptionSet("alpha-bn", (
        Option("source_weight", float, 0.9, "weight w of the source statistics", low=0, high=1),
    ))
    min_batch_reason = "with source_weight=0 one image has no batch statistics; pass source_weight>0"
    notes = "no official code; default 0.9 = mariodoebler/test-time-adaptation BN.ALPHA 0.1 on test stats"

    @classmethod
    def batch_minimum(cls, options: dict[str, Any]) -> int:
        # A single image still has spatial statistics; only source_weight 0 on BatchNorm1d
        # would divide by sqrt(eps), so require 2 images there as tbn does.
        return 1 if options["source_weight"] > 0 else 2

    @classmethod
    def make_layer(cls, bn: nn.Module, source_weight: float) -> nn.Module:
        return AlphaBatchNorm(bn, source_weight)
