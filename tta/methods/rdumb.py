"""``rdumb``: ETA with a full reset every 1000 batches (Press et al., NeurIPS 2023; oripress/CCC).

Recipe: ``eta``'s parts + the one-step function ``tta.methods.rdumb_step.rdumb_step``:
before batch t (counted from 0, every batch counts) with t a positive multiple of
``reset_every``, the model, the optimizer and ETA's moving average return to their
initial state. The prediction is the pre-update logits.

Defaults: CIFAR-10/100 Adam 1e-3, d_margin 0.4 for both (mariodoebler/test-time-adaptation
``cfgs/*/rdumb.yaml``); ImageNet SGD 2.5e-4 momentum 0.9 without nesterov, d_margin 0.05
(CCC ``models/rdumb.py``). State across batches: parameters, optimizer, m and the batch
counter (``adapter.memory.state``).
"""
from __future__ import annotations

import torch
from torch import nn

from .adapter import Adapter
from .eata import ETA_OPTIONS
from .gradient import NO_BATCHNORM, gradient_adapter
from .options import Option, when
from .rdumb_step import RESET_EVERY, RDumbState, rdumb_step
from .registry import Resolved, register_method
from .step_state import StepState


@register_method(
    "rdumb",
    summary="RDumb: ETA, reset to the source model every 1000 batches",
    paper="Press, Schneider, Kümmerer, Bethge, NeurIPS 2023; oripress/CCC",
    options=(*ETA_OPTIONS, Option("reset_every", int, RESET_EVERY, "reset before every n-th batch", low=1)),
    defaults=(
        when(dataset="imagenet")(optimizer="sgd", lr=2.5e-4, momentum=0.9, nesterov=False, d_margin=0.05),
        NO_BATCHNORM,
    ),
    notes="stats=<statistics policy> composes; GN/LN-only models adapt their own norm affine",
)
def rdumb(model: nn.Module, opts: Resolved) -> Adapter:
    kw = {"d_margin": opts["d_margin"], "margin_factor": opts["margin_factor"], "reset_every": opts["reset_every"]}

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        result = rdumb_step(adapter.model, x, adapter.optimizer, adapter.memory.state,
                            restore=lambda: adapter.restore("model", "optimizer"), **kw)
        adapter.memory.record_collapse(result.collapsed)
        return result.logits

    return gradient_adapter(model, opts, None, step=step, memory=StepState(RDumbState(), "rdumb"))
