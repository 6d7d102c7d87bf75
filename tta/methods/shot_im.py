"""``shot-im``: SHOT's information maximization, online (Liang, Hu, Feng, ICML 2020; LINs-lab/ttab).

Recipe: a statistics policy (default ``tbn``: batch statistics, as the reference's
train-mode BatchNorm predicts with) + every parameter of the feature extractor (all
top-level modules but the classifier, found by name — ``fc``, ``classifier``, ``head``,
``linear`` — or else the last top-level module with parameters) + the one-step function
``shot_im_step``: mean entropy minus the entropy of the mean
prediction. The prediction is the pre-update logits.

Defaults (our choice, no published online setting; docs/methods.md): SGD nesterov,
momentum 0.9, lr 1e-3 on CIFAR (ttab's default) and 2.5e-4 on ImageNet. Batches of one
are refused: the diversity term cancels the entropy term there.

The step (``shot_im_step``), SHOT-IM in its online form.

Information maximization on each test batch: L = mean_b H(p_b) + Σ_c p̄_c log(p̄_c + 1e-5),
p̄ = mean_b p_b (confident and diverse predictions), one optimizer step on the whole
feature extractor with the classifier frozen; the pre-update logits are the prediction.
This is LINs-lab/ttab ``shot.py`` with ``cls_par = 0`` (SHOT-IM, tim-learn/SHOT
``image_target.py --cls_par 0``); the model is in train mode there, so BatchNorm uses and
updates batch statistics (the caller's statistics policy decides).

No per-dataset learning rate is published for CIFAR-C/ImageNet-C. Our defaults (the
options'): SGD with nesterov momentum 0.9 (ttab's optimizer), lr 1e-3 on CIFAR
(ttab's default and the top of its CIFAR-10-C grid {1e-3, 5e-4, 1e-4}) and 2.5e-4 on
ImageNet (the lr the entropy methods use there).

B = 1 is refused: with one sample p̄ = p, so the diversity term cancels the entropy term
up to the 1e-5 smoothing and the loss carries no signal.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import InputError
from ._adapter import Adapter
from ._entropy import all_finite, softmax_entropy
from ._gradient import NO_BATCHNORM, gradient_adapter, optimizer_options, stats_options
from ._options import when
from ._recipe import register_method, Resolved
from ._step_output import StepResult, StepState


DIVERSITY_EPS = 1e-5  # tim-learn/SHOT loss.py and ttab shot.py
#: top-level children SHOT leaves frozen (ttab's list, plus this package's CIFAR ResNet ``linear``)
CLASSIFIER_NAMES = ("fc", "classifier", "head", "linear")


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


log = logging.getLogger(__name__)

ONE_SAMPLE = ("with one image the diversity term cancels the entropy term; use eta, sar or deyo for "
              "single images")


def extractor_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of every top-level module except the classifier (named, else the last with parameters)."""
    children = list(model.named_children())
    frozen = {n for n, _ in children if n in CLASSIFIER_NAMES}
    if not frozen:
        with_params = [n for n, c in children if any(True for _ in c.parameters())]
        frozen = set(with_params[-1:])
        log.info("shot-im: no child named %s; freezing the last module with parameters, %s",
                 "/".join(CLASSIFIER_NAMES), sorted(frozen))
    return [p for n, c in children if n not in frozen for p in c.parameters()]


@register_method(
    "shot-im",
    summary="SHOT-IM: information maximization (entropy - diversity) on the feature extractor, online",
    paper="Liang, Hu, Feng, ICML 2020; tim-learn/SHOT, online as LINs-lab/ttab",
    options=(*stats_options("tbn"), *optimizer_options("sgd", 1e-3)),
    defaults=(when("SGD nesterov, as ttab")(nesterov=True), when(dataset="imagenet")(lr=2.5e-4), NO_BATCHNORM),
    notes="classifier frozen; everything before it adapts (not only norm layers)",
    min_batch_size=2,
)
def shot_im(model: nn.Module, opts: Resolved) -> Adapter:
    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        result = shot_im_step(adapter.model, x, adapter.optimizer)
        adapter.memory.record_collapse(result.collapsed)
        return result.logits

    return gradient_adapter(model, opts, None, step=step, memory=StepState(None, "shot-im"),
                            params=extractor_parameters, min_batch_size=2, min_batch_reason=ONE_SAMPLE)
