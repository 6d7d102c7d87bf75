"""``unmix-tns``: Un-Mixing Test-Time Normalization Statistics (Tomar et al., ICLR 2024).

Every BatchNorm2d becomes a layer holding K statistics components (one (K, C) tensor
of means and one of variances), initialized from the source statistics with noise
drawn once (the official code's independent noise per (k, c), paper Eq. 5)::

    mu_k  = mu_s + sqrt(alpha K/(K-1)) * sigma_s * zeta_kc,   zeta ~ N(0, 1)
    var_k = (1 - alpha) * var_s                               (K = 1: mu_s, var_s, alpha = 0)

For a batch z (B, C, H, W), with instance statistics m_b, v_b (biased, over H, W)::

    p_bk   = softmax_k(cos(m_b, mu_k) / tau)                  (no gradient through p)
    mh_bkc = (1 - p_bk) mu_kc  + p_bk m_bc
    vh_bkc = (1 - p_bk) var_kc + p_bk v_bc
    mean_bc = mean_k mh_bkc
    var_bc  = mean_k vh_bkc + mean_k mh_bkc^2 - mean_bc^2    (law of total variance)
    y = gamma (z - mean) / sqrt(var + eps) + beta

and only then the components move (no gradient)::

    mu_k  += lam * mean_b p_bk (m_b - mu_k)
    var_k += lam * mean_b p_bk (v_b - var_k),     lam = 1 - (1 - m_bn)^(B / B_max)

m_bn is the source BatchNorm's momentum. The (B, K, C) mixtures are never built: the
K-means above are expanded into (B, K) x (K, C) matrix products.

B in lam: the official code uses the configured test batch size. Here ``batch_size=None``
(the default) uses the actual size of each batch, which equals the official value for
every full batch and scales lam down for a short last batch or single images
(B = 1, B_max = 64 gives lam = 0.0016449). Pass ``batch_size`` to pin it.

The noise follows ``seed``; ``seed=None`` (the default) draws that seed from torch's
global generator, so ``torch.manual_seed(s)`` before ``tta.adapt`` fixes the components
and ``tta run --seed s`` (which seeds torch before building the adapter) varies them
with the run seed, as the official runs do. ``hparams()`` then records ``seed=None``:
the run's seed determines it, and results of one setting stay one leaderboard row.

A stratified initialisation (not the paper's; ``stratified_noise``) replaces the Gaussian
draw by K fixed values per channel: the normal quantiles at (k + 1/2)/K, centred and scaled
to sample variance 1, dealt to the components in a per-channel order the seed shuffles. The
components' mixture then has exactly the source mean and variance in every channel, and the
seed only decides which component gets which value. A composing method asks for it with
``init="stratified"`` in the options it hands ``layer_factory`` (``regime-aware``'s
``unmix_init``); it is not an option of ``unmix-tns`` itself, whose recorded hyperparameters
(and so its board rows and resume keys) stay as they were. Without it the draw is the official one.

BatchNorm1d layers keep the source statistics, as in the official ``UnMixTNS1d``.
The layer adapts on every forward, whatever ``self.training`` says.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._moments import (
    Scratch,
    SourceBatchNorm,
    SourceStatsMixin,
    fast_instance_stats,
    instance_stats,
    needs_exact_grad,
    normalize_per_sample,
)
from ._options import Option, OptionSet, when
from ._stats_policy import StatsPolicy, register_stats




def unmix_momentum(bn_momentum: float, batch_size: int, batch_size_max: int) -> float:
    """lam = 1 - (1 - m)^(B / B_max), the official batch-size-corrected momentum."""
    return 1.0 - (1.0 - bn_momentum) ** (batch_size / batch_size_max)


def stratified_noise(K: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    """(K, C) noise whose every column holds the same K values, normal quantiles at (k + 1/2)/K
    centred and scaled to sample variance 1, in an order drawn per column from ``generator``."""
    p = (torch.arange(K, dtype=torch.float64) + 0.5) / K
    q = 2.0 ** 0.5 * torch.erfinv(2.0 * p - 1.0)
    q = q - q.mean()
    q = q / q.square().sum().div(K - 1).sqrt()
    order = torch.rand(channels, K, generator=generator).argsort(dim=1)  # (C, K)
    return q[order].T.contiguous().float()


class UnMixTNS2d(SourceStatsMixin, nn.Module):
    """BatchNorm2d replacement that mixes instance statistics with K running components."""

    def __init__(
        self,
        bn: nn.Module,
        K: int,
        noise: torch.Tensor | None,
        alpha: float,
        tau: float,
        batch_size: int | None,
        batch_size_max: int,
        scratch: Scratch | None = None,
    ) -> None:
        super().__init__()
        self.copy_from_bn(bn)
        self.scratch = scratch
        self.K, self.tau = K, tau
        self.batch_size, self.batch_size_max = batch_size, batch_size_max
        mu = self.source_mean.expand(K, -1).clone()
        var = self.source_var.expand(K, -1).clone()
        if K > 1:
            assert noise is not None
            mu = mu + (alpha * K / (K - 1)) ** 0.5 * var.sqrt() * noise.to(mu)
            var = (1.0 - alpha) * var
        self.register_buffer("mu_k", mu)
        self.register_buffer("var_k", var)
        #: a composing method may change the components' pace: each batch then counts as ``rate_scale`` times its
        #: size in lam (``regime-aware``: a subset of the batch counted as all of it). Not state: the composer
        #: sets it before each step.
        self.rate_scale = 1.0
        #: when a composer sets ``probe_spread``, each forward leaves here the spread of the batch's instance
        #: log-variances (their std over the batch, mean over channels): how unlike the images' styles are
        self.probe_spread = False
        self.spread: torch.Tensor | None = None

    def momentum_for(self, n: int) -> float:
        b = self.batch_size or n
        return unmix_momentum(self.source_momentum, b if self.rate_scale == 1.0 else self.rate_scale * b,
                              self.batch_size_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exact = needs_exact_grad(x, self.weight, self.bias)
        m, v = instance_stats(x) if exact else fast_instance_stats(x, self.scratch)  # (B, C) each
        with torch.no_grad():
            sim = F.normalize(m, dim=1) @ F.normalize(self.mu_k, dim=1).T
            p = torch.softmax(sim / self.tau, dim=1)  # (B, K)
        q = 1.0 - p
        K = self.K
        # mean_k of mh, vh and mh^2, using sum_k p_bk = 1
        mean = (q @ self.mu_k + m) / K
        second = (q.square() @ self.mu_k.square() + 2.0 * ((q * p) @ self.mu_k) * m
                  + p.square().sum(1, keepdim=True) * m.square()) / K
        var = ((q @ self.var_k + v) / K + second - mean.square()).clamp_min(0.0)  # rounding can go below 0
        out = normalize_per_sample(x, mean, var, self.weight, self.bias, self.eps)
        with torch.no_grad():
            if self.probe_spread:
                self.spread = v.clamp_min(self.eps).log().std(0).mean() if x.shape[0] > 1 else None
            rate = self.momentum_for(x.shape[0]) / x.shape[0]
            resp = p.sum(0).unsqueeze(1)  # (K, 1)
            self.mu_k.add_((p.T @ m.detach() - resp * self.mu_k).mul_(rate))
            self.var_k.add_((p.T @ v.detach() - resp * self.var_k).mul_(rate))
        return out

    def extra_repr(self) -> str:
        return f"{self.num_features}, K={self.K}, tau={self.tau}, B={self.batch_size}, B_max={self.batch_size_max}"


@register_stats
class UnMixTNSPolicy(StatsPolicy):
    name = "unmix-tns"
    summary = "UnMix-TNS: instance statistics mixed with K running source-initialized components"
    paper = "Tomar, Vray, Thiran, Bozorgtabar, ICLR 2024; devavratTomar/unmixtns"
    options = OptionSet("unmix-tns", (
        Option("K", int, 16, "number of statistics components", low=1, high=math.inf),
        Option("batch_size", int, None, "B in lam (None: each batch's own size)", low=1, high=math.inf, nullable=True),
        Option("batch_size_max", int, 64, "B_max in lam", low=1, high=math.inf),
        Option("alpha", float, 0.5, "spread of the initial components", low=0, high=1),
        Option("tau", float, 0.07, "softmax temperature of the component assignment", low=0, open_low=True, high=math.inf),
        Option("seed", int, None, "seed of the initial component noise (None: drawn from torch's global RNG, which tta run seeds with --seed)", low=0, high=math.inf, nullable=True),
    ), (
        when(dataset="imagenet")(batch_size_max=16),
        when(shift="mixed")(K=128),
    ))
    notes = "K=128 for mixed domains; seed=None follows the run seed; batch_size=None: lam uses each batch's size (B=1 works, lam scaled)"

    @classmethod
    def layer_factory(cls, options: dict[str, Any]) -> Callable[[nn.Module], nn.Module]:
        # One generator for the whole model: the noise of each layer follows from the seed
        # and the layer's position in module order.
        seed = options["seed"]
        if seed is None:  # follow torch's global RNG, which `tta run` seeds with --seed before building the method
            seed = int(torch.randint(0, 2**62, (1,)).item())
        gen = torch.Generator().manual_seed(seed)
        K = options["K"]
        scratch = Scratch()  # layers run one after another, so one temporary buffer serves all

        def make(bn: nn.Module) -> nn.Module:
            if isinstance(bn, nn.BatchNorm1d):
                return SourceBatchNorm(bn)
            if K == 1:
                noise = None
            elif options.get("init", "random") == "stratified":
                noise = stratified_noise(K, bn.num_features, gen)
            else:
                noise = torch.randn(K, bn.num_features, generator=gen)
            return UnMixTNS2d(bn, K, noise, options["alpha"], options["tau"],
                              options["batch_size"], options["batch_size_max"], scratch)

        return make
