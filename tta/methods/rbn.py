"""``rbn``: RoTTA's robust BatchNorm as a statistics policy (Yuan, Xie, Li, CVPR 2023).

Every BatchNorm1d/2d becomes a ``RobustBatchNorm`` (``tta.methods.rbn``): global
statistics, starting at the source ones, move by ``alpha`` times each batch's statistics
(biased variance), and the layer normalizes with the updated values. RBN adapts in
train mode only (BIT-DA/RoTTA ``core/utils/bn_layers.py``), so this policy puts the
swapped layers in train mode: as a statistics-only method (``tta.adapt(m, "rbn")``) or
under another gradient method (``stats="rbn"``) they move on every forward. ``rotta``
sets the modes itself, per the official step (eval for predictions, train for updates).

The layer (``RobustBatchNorm``): global statistics moved by an EMA of batch statistics.

Yuan, Xie, Li, "Robust Test-Time Adaptation in Dynamic Scenarios", CVPR 2023; official
code BIT-DA/RoTTA ``core/utils/bn_layers.py`` (``RobustBN1d/2d``). Starting from the
source running statistics, a train-mode forward does::

    mean <- (1 - alpha) * mean + alpha * batch_mean
    var  <- (1 - alpha) * var  + alpha * batch_var        (biased, over N and spatial dims)
    y = gamma * (x - mean) / sqrt(var + eps) + beta       (the *updated* statistics)

so the output depends on the batch only through ``alpha`` times its statistics; autograd
follows that dependence, as in the official layer (the stored copy is detached). An
eval-mode forward normalizes with the stored statistics and changes nothing.
alpha = 0.05 is the official ``ADAPTER.RoTTA.ALPHA``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._moments import normalize, normalize_with_batch_stats, SourceStatsMixin
from ._options import Option, OptionSet
from ._stats_policy import register_stats, StatsPolicy




class RobustBatchNorm(SourceStatsMixin, nn.Module):
    """RBN for BatchNorm1d/2d inputs: normalizes with EMA global statistics (see module doc).

    Buffers: ``source_mean/var`` (kept for reference), ``global_mean/var`` (the state).
    """

    def __init__(self, bn: nn.Module, alpha: float) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"RBN alpha must lie in [0, 1], got {alpha}; the official value is 0.05")
        self.copy_from_bn(bn)
        self.alpha = float(alpha)
        self.register_buffer("global_mean", self.source_mean.clone())
        self.register_buffer("global_var", self.source_var.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return normalize(x, self.global_mean, self.global_var, self.weight, self.bias, self.eps)
        # outside autograd one fused BatchNorm pass yields the batch statistics (Welford's var_mean
        # is slow on channels_last CPU tensors); under autograd the plain differentiable computation
        return normalize_with_batch_stats(x, self._update, self.weight, self.bias, self.eps)

    def _update(self, b_mean: torch.Tensor, b_var: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blend the batch's biased statistics into the global ones, store them, return them."""
        mean = (1 - self.alpha) * self.global_mean + self.alpha * b_mean
        var = (1 - self.alpha) * self.global_var + self.alpha * b_var
        with torch.no_grad():
            self.global_mean.copy_(mean)
            self.global_var.copy_(var)
        return mean, var

    def reset_statistics(self) -> None:
        """Back to the source statistics (the affine parameters are left alone)."""
        with torch.no_grad():
            self.global_mean.copy_(self.source_mean)
            self.global_var.copy_(self.source_var)

    def extra_repr(self) -> str:
        return f"{self.num_features}, alpha={self.alpha}"


@register_stats
class RobustBNPolicy(StatsPolicy):
    name = "rbn"
    summary = "RoTTA's robust BatchNorm: global statistics follow an EMA of batch statistics (rate alpha)"
    paper = "Yuan, Xie, Li, CVPR 2023; BIT-DA/RoTTA"
    options = OptionSet("rbn", (
        Option("alpha", float, 0.05, "EMA rate of the global statistics", low=0, high=1),
    ))
    notes = "layers adapt on every forward (train mode); rotta switches them per its step"

    @classmethod
    def make_layer(cls, bn: nn.Module, alpha: float) -> nn.Module:
        """An RBN layer copying ``bn``'s gamma, beta, eps and running statistics."""
        return RobustBatchNorm(bn, alpha)

    @classmethod
    def swap(cls, model: nn.Module, options: dict[str, Any]) -> None:
        super().swap(model, options)
        for module in model.modules():
            if isinstance(module, RobustBatchNorm):
                module.train()
