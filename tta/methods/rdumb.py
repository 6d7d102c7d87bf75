"""``rdumb``: ETA with a full reset every 1000 batches (Press et al., NeurIPS 2023; oripress/CCC).

Recipe: ``eta``'s parts + the one-step function ``tta.methods.rdumb.rdumb_step``:
before batch t (counted from 0, every batch counts) with t a positive multiple of
``reset_every``, the model, the optimizer and ETA's moving average return to their
initial state. The prediction is the pre-update logits.

Defaults: CIFAR-10/100 Adam 1e-3, d_margin 0.4 for both (mariodoebler/test-time-adaptation
``cfgs/*/rdumb.yaml``); ImageNet SGD 2.5e-4 momentum 0.9 without nesterov, d_margin 0.05
(CCC ``models/rdumb.py``). State across batches: parameters, optimizer, m and the batch
counter (``adapter.memory.state``).

The step (``rdumb_step``): ETA with a full reset every ``reset_every`` (1000) batches.

Reference: oripress/CCC ``models/rdumb.py``; mariodoebler/test-time-adaptation
(below "mdb") ``cfgs/*/rdumb.yaml``. Before the ETA step of batch t (counted from 0, whether or not a
batch updated the model), if t is a positive multiple of ``reset_every``, the model, the
optimizer and the moving-average probability m are reset. CCC also "resets" at t = 0,
where the model is still initial, so skipping it is the same.

At the reference CIFAR-C protocol (10,000 images × 15 corruptions, batch 200 = 750 batches)
the reset never fires and RDumb equals ETA; at ImageNet-C (5,000 × 15, batch 64 = 1,185
batches) it fires once.

Defaults: CCC (ImageNet): SGD 2.5e-4, momentum 0.9, no nesterov, d_margin 0.05, batch 64;
mdb cfgs/{cifar10_c,cifar100_c}/rdumb.yaml: Adam 1e-3, d_margin 0.4 for both, batch 200.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ._adapter import Adapter
from ._gradient import NO_BATCHNORM, gradient_adapter
from ._options import Option, when
from ._recipe import register_method, Resolved
from ._step_output import StepResult, StepState
from .eata import ETA_OPTIONS, ETAState, eta_step


@dataclass
class RDumbState:
    """ETA's state plus the batch counter that schedules the resets."""

    eta: ETAState = field(default_factory=ETAState)
    steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {"eta": self.eta.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.eta.load_state_dict(state["eta"])
        self.steps = int(state["steps"])


def rdumb_step(
    model: nn.Module,
    x: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    state: RDumbState,
    *,
    restore: Callable[[], None],
    reset_every: int,
    d_margin: float,
    margin_factor: float,
) -> StepResult:
    """One RDumb step. ``restore()`` must restore the model *and* the optimizer to their
    initial state (CCC reloads both); m is cleared here. Works at B = 1."""
    reset = state.steps > 0 and state.steps % reset_every == 0
    if reset:
        restore()
        state.eta.clear()
    result = eta_step(model, x, optimizer, state.eta, d_margin=d_margin, margin_factor=margin_factor)
    state.steps += 1
    result.reset = reset
    return result


@register_method(
    "rdumb",
    summary="RDumb: ETA, reset to the source model every 1000 batches",
    paper="Press, Schneider, Kümmerer, Bethge, NeurIPS 2023; oripress/CCC",
    options=(*ETA_OPTIONS, Option("reset_every", int, 1000, "reset before every n-th batch (CCC's 1000)", low=1)),
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
