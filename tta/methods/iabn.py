"""``iabn``: NOTE's instance-aware BatchNorm as a statistics policy (Gong et al., NeurIPS 2022).

Every BatchNorm2d becomes an ``InstanceAwareBatchNorm`` (``tta.methods.iabn``)
built from the pretrained layer without retraining, as the devavratTomar/unmixtns port
does; a BatchNorm1d stays a BatchNorm1d with running-statistics momentum ``momentum``.
In eval mode IABN soft-shrinks each instance's statistics towards the running ones and
changes nothing, so the statistics-only method ``iabn`` is the port's ``note_vanilla``
inference. ``note`` switches to train mode for its memory updates, where the running
statistics move with ``momentum``.

The layer (``InstanceAwareBatchNorm``), built from a pretrained BatchNorm2d.

Gong et al., NeurIPS 2022; official layer TaesikGong/NOTE ``utils/iabn.py``. This is the
devavratTomar/unmixtns port (``methods/note.py::convert_iabn``), which swaps IABN into a
model trained with plain BatchNorm, without retraining: the layer keeps the source
gamma, beta, eps and running statistics, uses k = 4 (hard-coded there) and moves its
running statistics with momentum 0.01 (NOTE's ``bn_momentum``; the port reads an unset
``NOTE.ALPHA``). For x (B, C, H, W), L = H * W, with *unbiased* variances::

    instance:  mu_i, s2_i over (H, W)
    reference: train mode  mu_b, s2_b over (B, H, W) of this batch, and the running
                           statistics move: r <- (1 - m) r + m * (mu_b, s2_b)
               eval mode   the running statistics
    s_mu = sqrt((s2_b + eps) / L),   s_s2 = (s2_b + eps) * sqrt(2 / (L - 1))
    mu  = mu_b + softshrink(mu_i - mu_b, k * s_mu)
    s2  = relu(s2_b + softshrink(s2_i - s2_b, k * s_s2))
    y   = gamma * (x - mu) / sqrt(s2 + eps) + beta

The (B, C) statistics are computed first (the batch ones from the instance ones, by the
law of total variance) and the input is then normalized in one fused pass.

With L <= ``skip_threshold`` (1, NOTE's ``skip_thres``) the reference statistics are used
as they are; the port has no such guard and divides by zero there. The port converts
BatchNorm2d only: :func:`make_layer` turns a BatchNorm1d into a copy of itself with the
same momentum, as the port's configuration leaves it (a plain BatchNorm1d).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, TTAError
from ._moments import fast_instance_stats, instance_stats, needs_exact_grad, normalize, normalize_per_sample
from ._options import Option, OptionSet
from ._stats_policy import register_stats, StatsPolicy




def soft_shrink(x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """sign(x) * max(|x| - lam, 0) with a tensor threshold (differentiable in both)."""
    return F.relu(x - lam) - F.relu(-(x + lam))


class InstanceAwareBatchNorm(nn.Module):
    """IABN from a source BatchNorm2d (see module doc). Buffers: running_mean/var, num_batches_tracked."""

    def __init__(self, bn: nn.Module, k: float, momentum: float, skip_threshold: int) -> None:
        super().__init__()
        if bn.running_mean is None:
            raise TTAError(
                "a BatchNorm layer has no running statistics (track_running_stats=False), so IABN has no "
                "reference statistics; use a model whose BatchNorm layers track running statistics"
            )
        self.num_features = bn.num_features
        self.eps = bn.eps
        self.k = float(k)
        self.momentum = float(momentum)
        self.skip_threshold = int(skip_threshold)
        self.weight = None if bn.weight is None else nn.Parameter(bn.weight.detach().clone())
        self.bias = None if bn.bias is None else nn.Parameter(bn.bias.detach().clone())
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = math.prod(x.shape[2:])
        # (B, C) instance statistics, biased; one pass of sums when no gradient is needed
        if needs_exact_grad(x, self.weight, self.bias):
            mean_i, var_i = instance_stats(x)
        else:
            mean_i, var_i = fast_instance_stats(x)
        if self.training:
            n = x.shape[0] * length
            if n < 2:
                raise InputError(
                    "IABN in train mode needs 2+ values per channel for the unbiased batch variance; "
                    "give the memory batch more than one sample"
                )
            # batch statistics from the instance ones (law of total variance), unbiased as BatchNorm's
            mean_b = mean_i.mean(0)
            var_b = (var_i.mean(0) + mean_i.square().mean(0) - mean_b.square()) * (n / (n - 1))
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean_b, alpha=m)
                self.running_var.mul_(1 - m).add_(var_b, alpha=m)
                self.num_batches_tracked += 1
        else:
            mean_b, var_b = self.running_mean, self.running_var
        if length <= self.skip_threshold:
            return normalize(x, mean_b, var_b, self.weight, self.bias, self.eps)
        var_i = var_i * (length / (length - 1))  # unbiased, as the official layer
        s_mu = torch.sqrt((var_b + self.eps) / length)
        s_var = (var_b + self.eps) * math.sqrt(2 / (length - 1))
        mean = mean_b + soft_shrink(mean_i - mean_b, self.k * s_mu)
        var = F.relu(var_b + soft_shrink(var_i - var_b, self.k * s_var))
        return normalize_per_sample(x, mean, var, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, k={self.k}, momentum={self.momentum}, skip_threshold={self.skip_threshold}"






@register_stats
class InstanceAwareBNPolicy(StatsPolicy):
    name = "iabn"
    summary = "NOTE's instance-aware BatchNorm on a pretrained BN model (inference only as a method)"
    paper = "Gong et al., NeurIPS 2022; TaesikGong/NOTE, devavratTomar/unmixtns port"
    options = OptionSet("iabn", (
        Option("k", float, 4.0, "soft-shrinkage width in standard errors", low=0, high=math.inf),
        Option("momentum", float, 0.01, "running-statistics momentum of train-mode forwards",
               low=0, high=1),
        Option("skip_threshold", int, 1, "feature maps of at most this many pixels use the "
               "reference statistics alone", low=0, high=math.inf),
    ))

    @classmethod
    def make_layer(cls, bn: nn.Module, k: float, momentum: float, skip_threshold: int) -> nn.Module:
        """IABN for a BatchNorm2d; for a BatchNorm1d a tracked copy with ``momentum`` (the port's behaviour)."""
        if isinstance(bn, nn.BatchNorm2d):
            return InstanceAwareBatchNorm(bn, k, momentum, skip_threshold)
        layer = copy.deepcopy(bn)
        layer.track_running_stats = True
        layer.momentum = float(momentum)
        return layer

    @classmethod
    def swap(cls, model: nn.Module, options: dict[str, Any]) -> None:
        super().swap(model, options)
        model.eval()  # the new layers are built in train mode; eval-mode IABN changes nothing
