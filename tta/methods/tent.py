"""``tent``: entropy minimization of the normalization affine parameters (Wang et al., ICLR 2021).

Per batch: forward, loss = mean_b H(softmax(logits_b)) with H(p) = -sum p log p, one
optimizer step on gamma, beta of every normalization layer, and the *pre-update*
logits are returned (DequanWang/tent ``forward_and_adapt``).

Recipe: ``stats="tbn"`` (N = 0, pure batch statistics, as TENT's
``track_running_stats=False`` BatchNorm) + entropy on the norm affine parameters + Adam.
Any statistics policy composes, e.g. ``tta.adapt(model, "tent", stats="unmix-tns",
stats_options={"K": 16})`` as in the UnMix-TNS paper. The model stays in eval mode (the
swapped layers ignore the mode); official TENT calls ``model.train()``, which differs
only for dropout-like layers.

Optimizer defaults: CIFAR-10/100: Adam, lr 1e-3, beta 0.9, no weight decay
(DequanWang/tent ``cfgs/tent.yaml``). ImageNet: SGD, lr 0.00025, momentum 0.9, Nesterov
(the TENT paper's ImageNet setting at batch 64; Nesterov as in every reference config).
Over UnMix-TNS the UnMix-TNS scripts' learning rate applies (Adam 1e-5 on CIFAR, SGD
Nesterov 2.5e-6 on ImageNet; see docs/methods.md), unless ``lr`` is given.
"""
from __future__ import annotations

import torch
from torch import nn

from ._adapter import Adapter
from ._entropy import log_softmax_entropy
from ._gradient import NO_BATCHNORM, UNMIX_PROTOCOL, gradient_adapter, optimizer_options, stats_options
from ._options import when
from ._recipe import Resolved, register_method


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """TENT's objective: the batch mean of the prediction entropy."""
    return log_softmax_entropy(logits).mean()


@register_method(
    "tent",
    summary="TENT: one entropy-minimization step per batch on norm affine parameters (pre-update logits)",
    paper="Wang, Shelhamer, Liu, Olshausen, Darrell, ICLR 2021; DequanWang/tent",
    options=(*stats_options("tbn"), *optimizer_options("adam", 1e-3)),
    defaults=(
        when(dataset="imagenet")(optimizer="sgd", lr=2.5e-4, momentum=0.9, nesterov=True),
        NO_BATCHNORM,
        *UNMIX_PROTOCOL,
    ),
    notes=("stats=<statistics policy> (+ stats_options) composes, e.g. stats=unmix-tns; "
           "GN/LN-only models adapt their affine"),
)
def tent(model: nn.Module, opts: Resolved) -> Adapter:
    return gradient_adapter(model, opts, lambda student: mean_entropy)
