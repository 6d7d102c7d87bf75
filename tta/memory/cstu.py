"""RoTTA's category-balanced sampling with timeliness and uncertainty (CSTU) memory.

Yuan, Xie, Li, CVPR 2023; official code BIT-DA/RoTTA ``core/utils/memory.py``. Each item
holds a sample, its pseudo-label, its uncertainty u (prediction entropy) and its age
(samples seen since it entered). Its heuristic score, higher = evicted first, is::

    score(age, u) = lambda_t / (1 + exp(-age / N)) + lambda_u * u / ln(C)

With N = capacity and per-class quota N / C (a float), adding (x, y, u) does:

* class y below quota: accept if the memory is not full, else evict from the majority
  classes (all classes with the largest occupancy);
* class y at quota: evict from class y;
* eviction scans the candidate classes in ascending order and each class in insertion
  order, keeps the maximal score with ties going to the *last* item scanned, and pops it
  only if its score exceeds the new item's score(0, u); otherwise the new item is
  rejected. No candidate at all means accept;
* afterwards every stored item ages by one (a just-added item has age 1).

Scores are computed in float64, as the official Python floats are.
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError
from .slots import SlotMemory


def timeliness_weight(ages: torch.Tensor) -> torch.Tensor:
    """RoTTA's per-item loss weight exp(-a) / (1 + exp(-a)) for normalized ages a = age / N."""
    return torch.exp(-ages) / (1 + torch.exp(-ages))


class CSTU(SlotMemory):
    """Category-balanced memory of RoTTA (see module doc). Defaults are the official ones."""

    state_keys = SlotMemory.state_keys + ("uncertainty", "age")

    def __init__(self, capacity: int = 64, num_classes: int = 10, lambda_t: float = 1.0, lambda_u: float = 1.0) -> None:
        if num_classes < 2:
            raise InputError(f"CSTU divides the uncertainty by ln(num_classes); it needs 2+ classes, got {num_classes}")
        self.lambda_t = float(lambda_t)
        self.lambda_u = float(lambda_u)
        super().__init__(capacity, num_classes)
        self.per_class = self.capacity / self.num_classes

    def reset(self) -> None:
        super().reset()
        self.uncertainty = torch.zeros(self.capacity, dtype=torch.float64)
        self.age = torch.zeros(self.capacity, dtype=torch.long)

    def score(self, age: torch.Tensor, uncertainty: torch.Tensor) -> torch.Tensor:
        """Heuristic score in float64, the official expression term by term."""
        age = age.to(torch.float64)
        return self.lambda_t * 1 / (1 + torch.exp(-age / self.capacity)) + self.lambda_u * uncertainty / math.log(
            self.num_classes
        )

    def add(self, x: torch.Tensor, label: int, uncertainty: float) -> bool:
        """Offer one sample with its pseudo-label and uncertainty; return whether it was stored."""
        label = self._check_class(label)
        u = torch.tensor(float(uncertainty), dtype=torch.float64)
        new_score = self.score(torch.zeros((), dtype=torch.long), u)
        counts = self.class_counts()
        if int(counts[label]) < self.per_class:
            if int(counts.sum()) < self.capacity:
                accept = True
            else:
                accept = self._remove_from(counts == counts.max(), new_score)
        else:
            only = torch.zeros(self.num_classes, dtype=torch.bool)
            only[label] = True
            accept = self._remove_from(only, new_score)
        if accept:
            slot = self._put(x, label)
            self.uncertainty[slot] = u
            self.age[slot] = 0
        self.age[self.cls >= 0] += 1
        return accept

    def _remove_from(self, classes: torch.Tensor, new_score: torch.Tensor) -> bool:
        stored = self.cls >= 0
        cand = torch.nonzero(stored & classes[self.cls.clamp(min=0)]).flatten()
        if cand.numel() == 0:
            return True
        scores = self.score(self.age[cand], self.uncertainty[cand])
        best = scores.max()
        if not bool(best > new_score):
            return False
        tied = cand[scores == best]
        # ties go to the last item in (class, insertion) scan order
        key = self.cls[tied] * (int(self.clock) + 1) + self.stamp[tied]
        self._free(int(tied[torch.argmax(key)]))
        return True

    def get_memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples (M, ...) in list order and their normalized ages age / N as float32 (M,)."""
        slots = self.ordered_slots()
        ages = (self.age[slots].to(torch.float64) / self.capacity).float()
        return self.samples(), ages
