"""``rbn``: RoTTA's robust BatchNorm as a statistics policy (Yuan, Xie, Li, CVPR 2023).

Every BatchNorm1d/2d becomes a ``RobustBatchNorm`` (``tta.methods.rbn_layer``): global
statistics, starting at the source ones, move by ``alpha`` times each batch's statistics
(biased variance), and the layer normalizes with the updated values. RBN adapts in
train mode only (BIT-DA/RoTTA ``core/utils/bn_layers.py``), so this policy puts the
swapped layers in train mode: as a statistics-only method (``tta.adapt(m, "rbn")``) or
under another gradient method (``stats="rbn"``) they move on every forward. ``rotta``
sets the modes itself, per the official step (eval for predictions, train for updates).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .options import Option, OptionSet
from .policy import StatsPolicy, register_stats
from .rbn_layer import DEFAULT_ALPHA, RobustBatchNorm


@register_stats
class RobustBN(StatsPolicy):
    name = "rbn"
    summary = "RoTTA's robust BatchNorm: global statistics follow an EMA of batch statistics (rate alpha)"
    paper = "Yuan, Xie, Li, CVPR 2023; BIT-DA/RoTTA"
    options = OptionSet("rbn", (
        Option("alpha", float, DEFAULT_ALPHA, "EMA rate of the global statistics", low=0, high=1),
    ))
    notes = "layers adapt on every forward (train mode); rotta switches them per its step"

    @classmethod
    def make_layer(cls, bn: nn.Module, alpha: float = DEFAULT_ALPHA) -> nn.Module:
        return RobustBatchNorm(bn, alpha)

    @classmethod
    def swap(cls, model: nn.Module, options: dict[str, Any]) -> None:
        super().swap(model, options)
        for module in model.modules():
            if isinstance(module, RobustBatchNorm):
                module.train()
