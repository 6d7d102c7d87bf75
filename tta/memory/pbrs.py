"""NOTE's prediction-balanced reservoir sampling (PBRS) memory.

Gong et al., "NOTE: Robust Continual Test-time Adaptation Against Temporal Correlation",
NeurIPS 2022; official code TaesikGong/NOTE ``utils/memory.py`` (the copy in
devavratTomar/unmixtns ``methods/note.py`` is the same). Adding (x, y):

* ``seen[y] += 1``;
* if the memory is full, let L be the classes of largest occupancy (ties all kept):
  - y not in L: pick a class c of L uniformly, evict a uniformly chosen item of c, accept;
  - y in L: draw u ~ U(0, 1); if u <= |M_y| / seen[y] evict a uniformly chosen item of y
    and accept, otherwise reject;
* an accepted item is appended to class y's list.

The official code draws from Python's ``random`` (``choice``, ``randrange``, ``uniform``).
Here every draw comes from the passed ``torch.Generator``, in the same order:
``choice(L)`` and ``randrange(n)`` are ``torch.randint(n)``, ``uniform(0, 1)`` is a float64
``torch.rand``.
"""
from __future__ import annotations

import torch

from .slots import SlotMemory


class PBRS(SlotMemory):
    """Prediction-balanced reservoir of NOTE (see module doc); capacity 64 is the official size."""

    state_keys = SlotMemory.state_keys + ("seen",)

    def __init__(self, capacity: int = 64, num_classes: int = 10) -> None:
        super().__init__(capacity, num_classes)

    def reset(self) -> None:
        super().reset()
        self.seen = torch.zeros(self.num_classes, dtype=torch.long)

    def add(self, x: torch.Tensor, label: int, generator: torch.Generator | None = None) -> bool:
        """Offer one sample with its pseudo-label; return whether it was stored."""
        label = self._check_class(label)
        self.seen[label] += 1
        counts = self.class_counts()
        if int(counts.sum()) >= self.capacity:
            largest = torch.nonzero(counts == counts.max()).flatten()
            if not bool((largest == label).any()):
                c = int(largest[_randbelow(largest.numel(), generator)])
                slots = self.class_slots(c)
                self._free(int(slots[_randbelow(slots.numel(), generator)]))
            else:
                m_c, n_c = int(counts[label]), int(self.seen[label])
                u = float(torch.rand((), dtype=torch.float64, generator=generator))
                if u <= m_c / n_c:
                    slots = self.class_slots(label)
                    self._free(int(slots[_randbelow(slots.numel(), generator)]))
                else:
                    return False
        self._put(x, label)
        return True

    def get_memory(self) -> torch.Tensor:
        """Stored samples (M, ...) in list order (by class, then insertion)."""
        return self.samples()


def _randbelow(n: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(n, (1,), generator=generator))
