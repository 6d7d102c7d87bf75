"""``tent``: entropy minimization of the normalization affine parameters (Wang et al., ICLR 2021).

Per batch: forward, loss = mean_b H(softmax(logits_b)) with H(p) = -sum p log p, one
optimizer step on gamma, beta of every normalization layer, and the *pre-update*
logits are returned (DequanWang/tent ``forward_and_adapt``).

Statistics policy: ``norm="tbn"`` with N = 0, i.e. pure batch statistics, as TENT's
``track_running_stats=False`` BatchNorm. Any statistics method composes, e.g.
``tta.adapt(model, method="tent", norm="unmix-tns", norm_options={"K": 16})`` as in the
UnMix-TNS paper. The model stays in eval mode (the swapped layers ignore the mode);
official TENT calls ``model.train()``, which differs only for dropout-like layers.

Optimizer defaults (spec §3.3): CIFAR-10/100: Adam, lr 1e-3, beta 0.9, no weight
decay (DequanWang/tent ``cfgs/tent.yaml``). ImageNet: SGD, lr 0.00025, momentum 0.9
(TENT paper's ImageNet setting, batch 64; not checked against a config file here).
Note that the UnMix-TNS scripts override the learning rate when composing with UnMix-TNS
(Adam 1e-5 on CIFAR, SGD 2.5e-6 nesterov on ImageNet, spec §1.9): pass ``lr`` for that.
"""
from __future__ import annotations

import torch

from .objective import GradientAdapter
from .registry import register_method


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy of softmax(logits), shape (B,)."""
    log_p = torch.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


@register_method
class Tent(GradientAdapter):
    name = "tent"
    summary = "TENT: one entropy-minimization step per batch on norm affine parameters (pre-update logits)"
    paper = "Wang, Shelhamer, Liu, Olshausen, Darrell, ICLR 2021; DequanWang/tent"
    dataset_defaults = {
        "cifar10": {"norm": "tbn", "optimizer": "adam", "lr": 1e-3, "beta": 0.9, "weight_decay": 0.0},
        "cifar100": {"norm": "tbn", "optimizer": "adam", "lr": 1e-3, "beta": 0.9, "weight_decay": 0.0},
        "imagenet": {"norm": "tbn", "optimizer": "sgd", "lr": 2.5e-4, "momentum": 0.9, "weight_decay": 0.0},
    }
    notes = "norm=<statistics method> (+ norm_options) composes, e.g. norm=unmix-tns; GN/LN-only models adapt their affine"

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        return softmax_entropy(logits).mean()
