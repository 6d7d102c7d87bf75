"""``alpha-bn-mcc``: α-BN statistics plus an online class-correlation loss on the affine parameters.

You, Li, Zhao (arXiv 2110.04065) describe Core as α-BN plus "pairwise class correlation
online optimization", but the paper's exact loss could not be read and no code exists,
so tta does not offer ``core`` (asking for it raises an error that points here). This
method is the nearest thing that can be built from verified parts: α-BN with the Minimum
Class Confusion loss (Jin, Wang, Long, Wang, ECCV 2020) on the batch predictions::

    P     = softmax(logits / T)                              (B, K), T = 2.5
    H_b   = entropy of P_b;  w_b = B (1 + e^{-H_b}) / sum_b' (1 + e^{-H_b'})
    C     = P^T diag(w) P                                    (K, K) class correlation
    C~_jk = C_jk / sum_k' C_jk'                              (row-normalized)
    loss  = (sum_j sum_{k != j} C~_jk) / K                   (between-class confusion)

It is *not* Core's objective, and its numbers must not be compared with the paper's Core.
Statistics policy: ``alpha-bn`` (source_weight 0.9 by default, pass ``stats_options``).
Optimizer: as TENT on CIFAR (Adam, lr 1e-3), a choice of this library.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ._adapter import Adapter
from ._entropy import log_softmax_entropy
from ._gradient import NO_BATCHNORM, UNMIX_PROTOCOL, gradient_adapter, optimizer_options, stats_options
from ._options import Option
from ._recipe import Resolved, register_method


def class_confusion_loss(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Minimum Class Confusion loss of a batch of logits (Jin et al., ECCV 2020)."""
    p = torch.softmax(logits / temperature, dim=1)
    h = log_softmax_entropy(logits / temperature).detach()
    w = 1.0 + torch.exp(-h)
    w = logits.shape[0] * w / w.sum()
    corr = p.T @ (w.unsqueeze(1) * p)
    corr = corr / corr.sum(dim=1, keepdim=True)
    return (corr.sum() - corr.trace()) / logits.shape[1]


@register_method(
    "alpha-bn-mcc",
    summary="alpha-bn statistics + Minimum Class Confusion loss on norm affine parameters",
    paper="alpha-BN: You, Li, Zhao, arXiv 2110.04065 (2021); loss: Jin et al., ECCV 2020 (MCC)",
    options=(*stats_options("alpha-bn"),
             Option("temperature", float, 2.5, "MCC softmax temperature T", low=0, open_low=True),
             *optimizer_options("adam", 1e-3)),
    defaults=(NO_BATCHNORM, *UNMIX_PROTOCOL),
    notes="not Core: Core's own loss is unverified, so this pairs alpha-bn with Minimum Class Confusion (MCC)",
)
def alpha_bn_mcc(model: nn.Module, opts: Resolved) -> Adapter:
    loss = partial(class_confusion_loss, temperature=opts["temperature"])
    return gradient_adapter(model, opts, lambda student: loss)
