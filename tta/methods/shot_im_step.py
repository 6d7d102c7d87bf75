"""SHOT-IM (Liang, Hu, Feng; ICML 2020) in its online form, one step.

Information maximization on each test batch: L = mean_b H(p_b) + Σ_c p̄_c log(p̄_c + 1e-5),
p̄ = mean_b p_b (confident and diverse predictions), one optimizer step on the whole
feature extractor with the classifier frozen; the pre-update logits are the prediction.
This is LINs-lab/ttab ``shot.py`` with ``cls_par = 0`` (SHOT-IM, tim-learn/SHOT
``image_target.py --cls_par 0``); the model is in train mode there, so BatchNorm uses and
updates batch statistics (the caller's statistics policy decides).

No per-dataset learning rate is published for CIFAR-C/ImageNet-C. Our defaults
(``DATASET_DEFAULTS``): SGD with nesterov momentum 0.9 (ttab's optimizer), lr 1e-3 on CIFAR
(ttab's default and the top of its CIFAR-10-C grid {1e-3, 5e-4, 1e-4}) and 2.5e-4 on
ImageNet (the lr the entropy methods use there), batch 64.

B = 1 is refused: with one sample p̄ = p, so the diversity term cancels the entropy term
up to the 1e-5 smoothing and the loss carries no signal.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import InputError
from .entropy_filters import all_finite, softmax_entropy
from .step_result import StepResult

DIVERSITY_EPS = 1e-5  # tim-learn/SHOT loss.py and ttab shot.py
#: top-level children SHOT leaves frozen (ttab's list, plus this package's CIFAR ResNet ``linear``)
CLASSIFIER_NAMES = ("fc", "classifier", "head", "linear")

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "nesterov": True, "batch_size": 64},
    "cifar100": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "nesterov": True, "batch_size": 64},
    "imagenet": {"optimizer": "sgd", "lr": 2.5e-4, "momentum": 0.9, "nesterov": True, "batch_size": 64},
}


def shot_im_parameters(
    model: nn.Module, classifier_names: Sequence[str] = CLASSIFIER_NAMES
) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every top-level child except the classifier, as ttab selects them."""
    frozen = [n for n, _ in model.named_children() if n in classifier_names]
    if not frozen:
        children = [n for n, _ in model.named_children()]
        raise InputError(f"SHOT-IM: no classifier among the model's top-level modules {children}; "
                         f"pass classifier_names naming it (default {list(classifier_names)})")
    return [(f"{n}.{pn}", p) for n, child in model.named_children() if n not in frozen
            for pn, p in child.named_parameters()]


def shot_im_loss(logits: torch.Tensor) -> torch.Tensor:
    """mean entropy − entropy of the mean prediction (with SHOT's 1e-5 smoothing)."""
    mean_probs = logits.softmax(1).mean(0)
    return softmax_entropy(logits).mean(0) + (mean_probs * torch.log(mean_probs + DIVERSITY_EPS)).sum()


def shot_im_step(model: nn.Module, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> StepResult:
    """One online SHOT-IM step; returns the pre-update logits. No state beyond parameters,
    BatchNorm running statistics and the optimizer."""
    if x.shape[0] < 2:
        raise InputError("SHOT-IM needs batches of at least 2 samples: with one, its diversity term cancels its "
                         "entropy term and the loss is ~0; use a batch size >= 2, or an entropy method such as "
                         "eta or sar at batch size 1")
    with torch.enable_grad():
        logits = model(x)
        loss = shot_im_loss(logits)
        if not all_finite(logits, loss):
            optimizer.zero_grad(set_to_none=True)
            return StepResult(logits.detach(), collapsed=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return StepResult(logits.detach(), updated=True, loss=float(loss.detach()))
