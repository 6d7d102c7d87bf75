"""What a method's step carries across batches (``StepState``) and what one step returns (``StepResult``).

The one-step functions of SAR, ETA/EATA, DeYO, RDumb, ROID and CoTTA keep their state
across batches in small objects with ``state_dict``/``load_state_dict`` (a moving average,
selection counters, a batch counter). A recipe hands such an object to the adapter as its
``memory``: this module saves it as extra state, so ``reset()`` and resume cover it like
the model. Subclasses add tensors (buffers) and models (submodules) a method copies from
the swapped student at construction, e.g. ROID's source weights or CoTTA's anchor.

``collapses`` counts batches whose logits or loss were not finite: the step skipped the
update and returned the logits, so a collapsing model never stops a run.

``StepResult`` is what every one-step function returns to its recipe (the one shape of step
output): the logits to score and what the step did.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn


@dataclass
class StepResult:
    """The scored logits of one step and what the step did.

    ``logits`` are the ones whose argmax is the online prediction (pre-update for every
    method here), detached. ``collapsed`` is set when the logits or the loss were not
    finite: the step then left the parameters and optimizer untouched, so the run loop
    can record the collapse instead of crashing. ``diagnostics`` holds what the step saw
    (selection counts, filter masks, kept samples) for logging and tests.
    """

    logits: torch.Tensor
    updated: bool = False
    collapsed: bool = False
    reset: bool = False
    loss: float = float("nan")
    diagnostics: dict[str, torch.Tensor | float | int | bool] = field(default_factory=dict)


log = logging.getLogger(__name__)


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StepState(nn.Module):
    """Holds ``state`` (an object with state_dict/load_state_dict, or None) and a collapse counter."""

    def __init__(self, state: Stateful | None = None, method: str = "") -> None:
        super().__init__()
        self.state = state
        self.method = method
        self.register_buffer("collapses", torch.zeros((), dtype=torch.long))

    def record_collapse(self, collapsed: bool) -> None:
        """Count a batch whose update was skipped because its logits or loss were not finite."""
        if collapsed:
            with torch.no_grad():
                self.collapses += 1
            log.warning("%s: non-finite logits or loss; this batch's update was skipped", self.method)

    def get_extra_state(self) -> dict[str, Any]:
        return {} if self.state is None else copy.deepcopy(self.state.state_dict())

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.state is not None:
            self.state.load_state_dict(copy.deepcopy(state))


def register_tensors(module: nn.Module, prefix: str, tensors: list[torch.Tensor]) -> None:
    """Register ``tensors`` as buffers ``{prefix}_{i}`` (clones), in order."""
    for i, t in enumerate(tensors):
        module.register_buffer(f"{prefix}_{i}", t.detach().clone())


def registered_tensors(module: nn.Module, prefix: str, n: int) -> list[torch.Tensor]:
    """The buffers ``register_tensors`` registered, as they are now (after ``.to()`` or a load)."""
    return [getattr(module, f"{prefix}_{i}") for i in range(n)]


__all__ = ["StepState", "register_tensors", "registered_tensors"]
