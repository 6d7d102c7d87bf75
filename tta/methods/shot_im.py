"""``shot-im``: SHOT's information maximization, online (Liang, Hu, Feng, ICML 2020; LINs-lab/ttab).

Recipe: a statistics policy (default ``tbn``: batch statistics, as the reference's
train-mode BatchNorm predicts with) + every parameter of the feature extractor (all
top-level modules but the classifier, found by name — ``fc``, ``classifier``, ``head``,
``linear`` — or else the last top-level module with parameters) + the one-step function
``tta.methods.shot_im_step.shot_im_step``: mean entropy minus the entropy of the mean
prediction. The prediction is the pre-update logits.

Defaults (our choice, no published online setting; docs/methods.md): SGD nesterov,
momentum 0.9, lr 1e-3 on CIFAR (ttab's default) and 2.5e-4 on ImageNet. Batches of one
are refused: the diversity term cancels the entropy term there.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from .adapter import Adapter
from .gradient import NO_BATCHNORM, gradient_adapter, optimizer_options, stats_options
from .options import when
from .registry import Resolved, register_method
from .shot_im_step import CLASSIFIER_NAMES, shot_im_step
from .step_state import StepState

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
