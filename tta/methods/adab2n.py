"""``adab2n``: AdaB²N's balanced BatchNorm statistics applied to a test stream (Lyu et al., NeurIPS 2023).

AdaB²N targets online continual learning; this is tta's test-time mapping
(docs/methods.md, "adab2n"), where a domain plays the role of a task. Each layer keeps one running (mean, var)
started at the source statistics. For every batch it updates them with AdaB²N's
modified momentum (official ``get_eta``, lvyilin/AdaB2N ``models/utils/adab2n.py``)::

    eta_1 = m^kappa,   eta_t = eta_{t-1} / (eta_{t-1} + (1 - m)^kappa)   -> 1 - (1 - m)^kappa
    running_mean <- running_mean + eta_t (batch_mean - running_mean)
    running_var  <- (1 - eta_t) running_var + eta_t batch_var               (biased, as official)

kappa = 1 is a plain EMA with rate m, kappa = 0 the cumulative average 1/t; m is the
source BatchNorm's momentum. t counts batches since construction or ``reset()`` and is
*not* reset at domain changes (the point of the balance). The batch is then normalized
with the updated running statistics (``normalize="running"``, eval-style and so robust
to label-correlated batches) or, as in AdaB²N's training forward, with the batch
statistics (``normalize="batch"``).

Default variant: modified momentum only, kappa = 0.4 (from the paper's grid
{0.1, 0.4, 0.7, 1}): its fixed point 1 - 0.9^0.4 = 0.041 is close to the rate RoTTA's
robust BN uses at test time (0.05), and its first steps (0.40, 0.29, 0.23, ...) adapt
fast. The Bayesian domain weighting needs domain ids, which a test stream does not
provide, so it runs only when ``forward(x, domain_ids=...)`` receives them: sample i
of domain d gets weight omega_d / n_d with omega_d = (c + n_d) / sum_j (c + n_j), c =
``domain_prior`` (exp(theta) of the paper, theta = 0 at init, not learned here). The
weights are renormalized to sum to one so that domains absent from the batch do not
shrink the statistics (the official code assumes every task is present).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import InputError
from ._moments import (
    SourceStatsMixin,
    fast_instance_stats,
    instance_stats,
    needs_exact_grad,
    normalize,
    normalize_with_batch_stats,
)
from ._options import Option, OptionSet
from ._stats_policy import StatsPolicy, register_stats


def initial_eta(momentum: float, kappa: float) -> float:
    """eta_0 such that the recursion's first step gives m^kappa (inf when kappa = 0)."""
    first = momentum**kappa
    return float("inf") if first >= 1.0 else (1.0 - momentum) ** kappa * first / (1.0 - first)


def weighted_stats(
    m: torch.Tensor, v: torch.Tensor, domain_ids: torch.Tensor, prior: float, num_domains: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """AdaB²N's Dirichlet-posterior weighted batch mean and biased variance from (B, C) instance stats."""
    counts = torch.bincount(domain_ids, minlength=num_domains).to(m.dtype)
    omega = (counts + prior) / (counts + prior).sum()
    w = omega[domain_ids] / counts[domain_ids]
    w = w / w.sum()
    mean = w @ m
    var = w @ (v + (m - mean).square())
    return mean, var


class BalancedBatchNorm(SourceStatsMixin, nn.Module):
    """BatchNorm with running statistics updated by AdaB²N's modified momentum."""

    def __init__(self, bn: nn.Module, kappa: float, momentum: float | None, normalize: str, domain_prior: float):
        super().__init__()
        self.copy_from_bn(bn)
        self.kappa = kappa
        self.momentum = self.source_momentum if momentum is None else momentum
        self.use_running = normalize == "running"
        self.domain_prior = domain_prior
        self.decay = (1.0 - self.momentum) ** kappa
        self.register_buffer("running_mean", self.source_mean.clone())
        self.register_buffer("running_var", self.source_var.clone())
        self.register_buffer("eta", torch.tensor(initial_eta(self.momentum, kappa)))
        self.register_buffer("num_domains", torch.tensor(0, dtype=torch.long))
        self.domain_ids: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.domain_ids is None or x.dim() == 2:
            return normalize_with_batch_stats(x, self.update, self.weight, self.bias, self.eps)
        with torch.no_grad():
            self.num_domains.clamp_(min=int(self.domain_ids.max()) + 1)
        m, v = instance_stats(x) if needs_exact_grad(x, self.weight, self.bias) else fast_instance_stats(x)
        mean, var = self.update(*weighted_stats(m, v, self.domain_ids, self.domain_prior, int(self.num_domains)), x)
        return normalize(x, mean, var, self.weight, self.bias, self.eps)

    def update(self, mean: torch.Tensor, var: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance eta and the running statistics; return the statistics to normalize with."""
        with torch.no_grad():
            self.eta.reciprocal_().mul_(self.decay).add_(1.0).reciprocal_()  # eta / (eta + decay)
            self.running_mean.lerp_(mean, self.eta)
            self.running_var.lerp_(var, self.eta)
        return (self.running_mean, self.running_var) if self.use_running else (mean, var)

    def extra_repr(self) -> str:
        return f"{self.num_features}, kappa={self.kappa}, momentum={self.momentum}"


@register_stats
class AdaB2NPolicy(StatsPolicy):
    name = "adab2n"
    summary = "AdaB²N modified momentum (kappa) for running statistics over a stream of domains"
    paper = "Lyu et al., NeurIPS 2023; lvyilin/AdaB2N (test-time mapping, docs/methods.md)"
    options = OptionSet("adab2n", (
        Option("kappa", float, 0.4, "momentum exponent (1: plain EMA, 0: cumulative average)", low=0, high=1),
        Option("momentum", float, None, "base momentum m (None: the source BN's)", low=0, high=1,
               open_low=True, open_high=True, nullable=True),
        Option("normalize", str, "running", "normalize with the running or the batch statistics",
               choices=("running", "batch")),
        Option("domain_prior", float, 1.0, "Dirichlet prior c of the domain weighting", low=0, open_low=True,
               high=float("inf")),
    ))
    min_batch_size = 2
    min_batch_reason = "one image gives no batch variance for fully connected BatchNorm1d layers"
    notes = "default: modified momentum only; Bayesian domain weighting runs when forward() gets domain_ids"

    @classmethod
    def make_layer(cls, bn: nn.Module, **options: Any) -> nn.Module:
        return BalancedBatchNorm(bn, **options)

    @classmethod
    @contextlib.contextmanager
    def batch_context(cls, model: nn.Module, x: torch.Tensor, domain_ids: Any = None) -> Iterator[None]:
        """``forward(x, domain_ids=...)``: ((B,) ints >= 0), when known, turn on the domain weighting."""
        if domain_ids is not None:
            domain_ids = torch.as_tensor(domain_ids, device=x.device).long()
            if domain_ids.shape != (x.shape[0],) or bool((domain_ids < 0).any()):
                raise InputError(
                    f"domain_ids must be {x.shape[0]} non-negative integers, one per image, "
                    f"got shape {tuple(domain_ids.shape)}; pass one domain id per image"
                )
        layers = [m for m in model.modules() if isinstance(m, BalancedBatchNorm)]
        for layer in layers:
            layer.domain_ids = domain_ids
        try:
            yield
        finally:
            for layer in layers:
                layer.domain_ids = None
