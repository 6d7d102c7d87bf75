"""A test-only method with every part the core carries: statistics policy, objective on
memory samples, optimizer, FIFO memory (non-tensor contents, saved as extra state), EMA
teacher, the adapter's random generator, and a custom step hook.

It mimics the shape of RoTTA/CoTTA-like methods without being any of them. Registered only
while a test needs it (``registered()``), so other tests never see it.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch
from torch import nn

from tta.methods import (METHODS, Adapter, Option, Resolved, gradient_adapter, optimizer_options, register_method,
                         stats_options)

NAME = "test-memory-teacher"


class FifoMemory(nn.Module):
    """The last ``capacity`` images and teacher probabilities; a list, so it is extra state."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.images: list[torch.Tensor] = []
        self.probs: list[torch.Tensor] = []

    def add(self, x: torch.Tensor, p: torch.Tensor) -> None:
        for xi, pi in zip(x, p):  # a memory insert is sequential by nature
            self.images.append(xi.clone())
            self.probs.append(pi.clone())
        del self.images[:-self.capacity], self.probs[:-self.capacity]

    def get_extra_state(self) -> dict[str, Any]:
        return {"images": [t.clone() for t in self.images], "probs": [t.clone() for t in self.probs]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.images = [t.clone() for t in state["images"]]
        self.probs = [t.clone() for t in state["probs"]]


def _step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t_logits = adapter.teacher(x)
    adapter.memory.add(x.detach(), t_logits.softmax(1))
    xm, pm = torch.stack(adapter.memory.images), torch.stack(adapter.memory.probs)
    noise = torch.randn(xm.shape, generator=adapter.generator).to(xm) * 0.05
    with torch.enable_grad():
        s = adapter.model(xm + noise)
        loss = adapter.objective(s, pm)
        adapter.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        adapter.optimizer.step()
    with torch.no_grad():
        rate = adapter.hparams()["ema"]
        for tp, sp in zip(adapter.teacher.parameters(), adapter.model.parameters()):
            tp.lerp_(sp, 1.0 - rate)
    return t_logits


def _consistency(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    return -(teacher_probs * student_logits.log_softmax(1)).sum(1).mean()


def build(model: nn.Module, opts: Resolved) -> Adapter:
    return gradient_adapter(model, opts, lambda student: _consistency, step=_step,
                            memory=FifoMemory(opts["capacity"]), teacher=copy.deepcopy, seed=opts["seed"])


@contextlib.contextmanager
def registered() -> Iterator[None]:
    register_method(
        NAME, summary="test-only memory + teacher method",
        options=(*stats_options("tbn-ema"), Option("capacity", int, 7, low=1),
                 Option("ema", float, 0.9, low=0, high=1), Option("seed", int, 0, low=0),
                 *optimizer_options("adam", 1e-2)),
    )(build)
    try:
        yield
    finally:
        del METHODS._items[NAME]  # noqa: SLF001
