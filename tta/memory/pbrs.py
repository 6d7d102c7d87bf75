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
Here every draw comes from the passed CPU ``torch.Generator``, in the same order:
``choice(L)`` and ``randrange(n)`` are ``torch.randint(n)``, ``uniform(0, 1)`` is a float64
``torch.rand``.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from .slots import SlotMemory


class PBRS(SlotMemory):
    """Prediction-balanced reservoir of NOTE (see module doc); capacity 64 is the official size."""

    def __init__(self, capacity: int = 64, num_classes: int = 10) -> None:
        super().__init__(capacity, num_classes)

    def reset(self) -> None:
        super().reset()
        self._seen = [0] * self.num_classes

    @property
    def seen(self) -> torch.Tensor:
        """(num_classes,) samples offered per pseudo-label since the last reset."""
        return torch.tensor(self._seen, dtype=torch.long)

    def add(self, x: torch.Tensor, label: int, generator: torch.Generator | None = None) -> bool:
        """Offer one sample with its pseudo-label; return whether it was stored."""
        label = self._check_class(label)
        self._seen[label] += 1
        if len(self) >= self.capacity:
            counts = self._counts
            top = max(counts)
            largest = [c for c, n in enumerate(counts) if n == top]
            if label not in largest:
                c = largest[_randbelow(len(largest), generator)]
                self._pop(c, _randbelow(counts[c], generator))
            else:
                u = float(torch.rand((), dtype=torch.float64, generator=generator))
                if u <= counts[label] / self._seen[label]:
                    self._pop(label, _randbelow(counts[label], generator))
                else:
                    return False
        self._put(x, label)
        return True

    def get_memory(self) -> torch.Tensor:
        """Stored samples (M, ...) in list order (by class, then insertion)."""
        return self.samples()

    def get_state(self) -> dict[str, torch.Tensor]:
        state = super().get_state()
        state["seen"] = self.seen
        return state

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        if "seen" not in state:
            raise InputError("PBRS state lacks 'seen'; pass a dict returned by PBRS.get_state()")
        super().set_state(state)
        self._seen = state["seen"].tolist()


def _randbelow(n: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(n, (1,), generator=generator))
