"""Fixed-capacity sample storage with per-class lists, shared by the class-aware memories.

The official memories keep one Python list per class and append new items at the end, so
"list order" is (class, insertion order). Here the samples live in one (capacity, ...)
tensor on the samples' device, and the bookkeeping (which slot holds which class, in
which order) is small Python lists, so that a per-sample insert costs microseconds and
never synchronizes with an accelerator. ``get_state()`` exports everything as tensors;
``set_state()`` rebuilds the lists from them.
"""
from __future__ import annotations

import torch

from ..errors import InputError


class SlotMemory:
    """Samples in ``capacity`` slots plus, per class, the list of its slots in insertion order."""

    def __init__(self, capacity: int, num_classes: int) -> None:
        if capacity < 1:
            raise InputError(f"memory capacity must be at least 1, got {capacity}")
        if num_classes < 1:
            raise InputError(f"memory needs at least one class, got {num_classes}")
        self.capacity = int(capacity)
        self.num_classes = int(num_classes)
        self.reset()

    def reset(self) -> None:
        """Empty the memory (the sample buffer is reallocated on the next insert)."""
        self.data: torch.Tensor | None = None
        self._lists: list[list[int]] = [[] for _ in range(self.num_classes)]
        self._counts: list[int] = [0] * self.num_classes
        self._free: list[int] = list(range(self.capacity - 1, -1, -1))  # pop() gives the lowest slot
        self._stamp: list[int] = [0] * self.capacity
        self._clock = 0

    # -- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.capacity - len(self._free)

    def counts(self) -> list[int]:
        """Number of stored items per class (a copy)."""
        return list(self._counts)

    def class_counts(self) -> torch.Tensor:
        """(num_classes,) number of stored items per class."""
        return torch.tensor(self.counts(), dtype=torch.long)

    def ordered_slots(self) -> list[int]:
        """Slots of the stored items in the official list order: by class, then insertion."""
        return [s for lst in self._lists if lst for s in lst]

    def samples(self) -> torch.Tensor:
        """Stored samples (M, ...) in list order; an empty tensor when nothing is stored."""
        slots = self.ordered_slots()
        if self.data is None or not slots:
            return torch.empty(0)
        return self.data[torch.tensor(slots, device=self.data.device)]

    def labels(self) -> torch.Tensor:
        """Stored (pseudo-)labels in list order."""
        return torch.tensor([c for c, lst in enumerate(self._lists) for _ in lst], dtype=torch.long)

    # -- writing -------------------------------------------------------------------------
    def _put(self, x: torch.Tensor, c: int) -> int:
        if self.data is None:
            self.data = x.new_zeros((self.capacity,) + tuple(x.shape))
        elif self.data.shape[1:] != x.shape:
            raise InputError(
                f"memory holds samples of shape {tuple(self.data.shape[1:])}, got {tuple(x.shape)}; "
                "reset() the memory before changing the input size"
            )
        slot = self._free.pop()
        self.data[slot] = x.detach()
        self._lists[c].append(slot)
        self._counts[c] += 1
        self._stamp[slot] = self._clock
        self._clock += 1
        return slot

    def _pop(self, c: int, index: int) -> int:
        """Remove item ``index`` of class ``c``'s list; return its slot."""
        slot = self._lists[c].pop(index)
        self._counts[c] -= 1
        self._free.append(slot)
        return slot

    def _check_class(self, c: int) -> int:
        c = int(c)
        if not 0 <= c < self.num_classes:
            raise InputError(f"class {c} outside 0..{self.num_classes - 1}; give the memory the model's class count")
        return c

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, torch.Tensor]:
        """All contents as tensors: ``cls`` (-1 = free) and ``stamp`` per slot, ``clock``, and ``data``."""
        cls = [-1] * self.capacity
        for c, lst in enumerate(self._lists):
            for s in lst:
                cls[s] = c
        state = {
            "cls": torch.tensor(cls, dtype=torch.long),
            "stamp": torch.tensor(self._stamp, dtype=torch.long),
            "clock": torch.tensor(self._clock, dtype=torch.long),
        }
        if self.data is not None:
            state["data"] = self.data.clone()
        return state

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`get_state` returned."""
        missing = [k for k in ("cls", "stamp", "clock") if k not in state]
        if missing:
            raise InputError(f"memory state lacks {missing}; pass a dict returned by get_state()")
        if state["cls"].shape != (self.capacity,):
            raise InputError(f"memory state is for capacity {state['cls'].numel()}, this memory has {self.capacity}")
        cls, stamp = state["cls"].tolist(), state["stamp"].tolist()
        if max(cls) >= self.num_classes:
            raise InputError(f"memory state has class {max(cls)}, this memory has {self.num_classes} classes")
        self._stamp = stamp
        self._clock = int(state["clock"])
        self._lists = [[] for _ in range(self.num_classes)]
        for s in sorted(range(self.capacity), key=lambda s: stamp[s]):
            if cls[s] >= 0:
                self._lists[cls[s]].append(s)
        self._counts = [len(lst) for lst in self._lists]
        self._free = [s for s in range(self.capacity - 1, -1, -1) if cls[s] < 0]
        self.data = state["data"].clone() if "data" in state else None
