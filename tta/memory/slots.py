"""Fixed-capacity slot storage with per-class lists, shared by the class-aware memories.

The official memories keep one Python list per class and append new items at the end,
so "list order" is (class, insertion order). Here items live in ``capacity`` slots; a
monotone insertion ``stamp`` per slot recovers that order with one sort.
"""
from __future__ import annotations

import torch

from ..errors import InputError


class SlotMemory:
    """Samples plus their class in ``capacity`` slots; class ``-1`` marks a free slot."""

    #: Tensors saved by :meth:`get_state`; subclasses add their own.
    state_keys: tuple[str, ...] = ("cls", "stamp", "clock")

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
        self.cls = torch.full((self.capacity,), -1, dtype=torch.long)
        self.stamp = torch.zeros(self.capacity, dtype=torch.long)
        self.clock = torch.zeros((), dtype=torch.long)

    # -- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int((self.cls >= 0).sum())

    def class_counts(self) -> torch.Tensor:
        """(num_classes,) number of stored items per class."""
        stored = self.cls[self.cls >= 0]
        return torch.bincount(stored, minlength=self.num_classes)

    def ordered_slots(self) -> torch.Tensor:
        """Slots of the stored items in the official list order: by class, then insertion."""
        slots = torch.nonzero(self.cls >= 0).flatten()
        key = self.cls[slots] * (int(self.clock) + 1) + self.stamp[slots]
        return slots[torch.argsort(key)]

    def class_slots(self, c: int) -> torch.Tensor:
        """Slots of class ``c`` in insertion order (the official per-class list)."""
        slots = torch.nonzero(self.cls == c).flatten()
        return slots[torch.argsort(self.stamp[slots])]

    def samples(self) -> torch.Tensor:
        """Stored samples (M, ...) in list order; empty (0,) when nothing is stored."""
        if self.data is None:
            return torch.empty(0)
        return self.data[self.ordered_slots().to(self.data.device)]

    def labels(self) -> torch.Tensor:
        """Stored (pseudo-)labels in list order."""
        return self.cls[self.ordered_slots()]

    # -- writing -------------------------------------------------------------------------
    def _put(self, x: torch.Tensor, c: int) -> int:
        if self.data is None:
            self.data = x.new_zeros((self.capacity,) + tuple(x.shape))
        elif self.data.shape[1:] != x.shape:
            raise InputError(
                f"memory holds samples of shape {tuple(self.data.shape[1:])}, got {tuple(x.shape)}; "
                "reset() the memory before changing the input size"
            )
        free = torch.nonzero(self.cls < 0)
        slot = int(free[0])
        self.data[slot] = x.detach()
        self.cls[slot] = c
        self.stamp[slot] = self.clock
        self.clock += 1
        return slot

    def _free(self, slot: int) -> None:
        self.cls[slot] = -1

    def _check_class(self, c: int) -> int:
        c = int(c)
        if not 0 <= c < self.num_classes:
            raise InputError(f"class {c} outside 0..{self.num_classes - 1}; give the memory the model's class count")
        return c

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, torch.Tensor]:
        """All contents as tensors (``data`` only once something was stored)."""
        state = {k: getattr(self, k).clone() for k in self.state_keys}
        if self.data is not None:
            state["data"] = self.data.clone()
        return state

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`get_state` returned."""
        missing = [k for k in self.state_keys if k not in state]
        if missing:
            raise InputError(f"memory state lacks {missing}; pass a dict returned by get_state()")
        if state["cls"].shape != (self.capacity,):
            raise InputError(f"memory state is for capacity {state['cls'].numel()}, this memory has {self.capacity}")
        for k in self.state_keys:
            setattr(self, k, state[k].clone())
        self.data = state["data"].clone() if "data" in state else None
