"""What one adaptation step of a functional method reports back to the run loop."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StepResult:
    """The scored logits of one step and what the step did.

    ``logits`` are the ones whose argmax is the online prediction (pre-update for every
    method here), detached. ``collapsed`` is set when the logits or the loss were not
    finite: the step then left the parameters and optimizer untouched, so the run loop
    can record the collapse instead of crashing. ``stats`` holds per-step diagnostics
    (selection counts, loss value, filter masks) for logging and tests.
    """

    logits: torch.Tensor
    updated: bool = False
    collapsed: bool = False
    reset: bool = False
    loss: float = float("nan")
    stats: dict[str, torch.Tensor | float | int] = field(default_factory=dict)
