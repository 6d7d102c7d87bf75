"""RoTTA's category-balanced sampling with timeliness and uncertainty (CSTU) memory.

Yuan, Xie, Li, CVPR 2023; official code BIT-DA/RoTTA ``core/utils/memory.py``. Each item
holds a sample, its pseudo-label, its uncertainty u (prediction entropy) and its age
(samples offered since it entered). Its heuristic score, higher = evicted first, is::

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

Ages are kept as the add count at entry (age = adds since then, which is what the
official per-add increment counts), and scores are Python floats computed with the
official expression, so ties and comparisons are bit-identical to the official code.
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

    def __init__(self, capacity: int = 64, num_classes: int = 10, lambda_t: float = 1.0, lambda_u: float = 1.0) -> None:
        if num_classes < 2:
            raise InputError(f"CSTU divides the uncertainty by ln(num_classes); it needs 2+ classes, got {num_classes}")
        self.lambda_t = float(lambda_t)
        self.lambda_u = float(lambda_u)
        super().__init__(capacity, num_classes)
        self.per_class = self.capacity / self.num_classes
        self._log_c = math.log(self.num_classes)

    def reset(self) -> None:
        super().reset()
        self._uncertainty: list[float] = [0.0] * self.capacity
        self._birth: list[int] = [0] * self.capacity
        self._adds = 0

    def score(self, age: int, uncertainty: float) -> float:
        """Heuristic score, the official expression term by term."""
        return self.lambda_t * 1 / (1 + math.exp(-age / self.capacity)) + self.lambda_u * uncertainty / self._log_c

    def add(self, x: torch.Tensor, label: int, uncertainty: float) -> bool:
        """Offer one sample with its pseudo-label and uncertainty; return whether it was stored."""
        label = self._check_class(label)
        uncertainty = float(uncertainty)
        new_score = self.score(0, uncertainty)
        counts = self._counts
        if counts[label] < self.per_class:
            if len(self) < self.capacity:
                accept = True
            else:
                top = max(counts)
                accept = self._remove_from([c for c, n in enumerate(counts) if n == top], new_score)
        else:
            accept = self._remove_from([label], new_score)
        if accept:
            slot = self._put(x, label)
            self._uncertainty[slot] = uncertainty
            self._birth[slot] = self._adds
        self._adds += 1  # every stored item ages by one
        return accept

    def _remove_from(self, classes: list[int], new_score: float) -> bool:
        best = best_class = best_index = None
        for c in classes:
            for i, slot in enumerate(self._lists[c]):
                s = self.score(self._adds - self._birth[slot], self._uncertainty[slot])
                if best is None or s >= best:  # ties go to the last item scanned
                    best, best_class, best_index = s, c, i
        if best_class is None:
            return True
        if best > new_score:
            self._pop(best_class, best_index)
            return True
        return False

    def items(self) -> list[tuple[int, float, int]]:
        """(label, uncertainty, age) of the stored items in list order."""
        return [
            (c, self._uncertainty[s], self._adds - self._birth[s]) for c, lst in enumerate(self._lists) for s in lst
        ]

    def get_memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples (M, ...) in list order and their normalized ages age / N as float32 (M,)."""
        ages = torch.tensor([age / self.capacity for _, _, age in self.items()], dtype=torch.float64).float()
        return self.samples(), ages

    def get_state(self) -> dict[str, torch.Tensor]:
        state = super().get_state()
        state["uncertainty"] = torch.tensor(self._uncertainty, dtype=torch.float64)
        state["birth"] = torch.tensor(self._birth, dtype=torch.long)
        state["adds"] = torch.tensor(self._adds, dtype=torch.long)
        return state

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        missing = [k for k in ("uncertainty", "birth", "adds") if k not in state]
        if missing:
            raise InputError(f"CSTU state lacks {missing}; pass a dict returned by CSTU.get_state()")
        super().set_state(state)
        self._uncertainty = state["uncertainty"].tolist()
        self._birth = state["birth"].tolist()
        self._adds = int(state["adds"])
