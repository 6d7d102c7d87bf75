"""A sample memory as an ``nn.Module`` part of an adapter: its contents are the adapter's state.

The memories (``CSTU``, ``PBRS``) keep Python bookkeeping next to one sample tensor, so
they travel as extra state: ``get_extra_state()`` is their ``get_state()`` (a dict of
tensors, loadable with ``weights_only=True``). ``seen`` counts the samples offered since
the last reset; RoTTA and NOTE update every ``update_frequency`` of them, mid-batch if
need be. ``reset()`` of the adapter restores the empty memory and ``seen = 0``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .slots import SlotMemory


class MemoryModule(nn.Module):
    """Wraps ``bank`` (a ``SlotMemory``) with a ``seen`` counter; both are state."""

    def __init__(self, bank: SlotMemory) -> None:
        super().__init__()
        self.bank = bank
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return len(self.bank)

    def get_extra_state(self) -> dict[str, Any]:
        return self.bank.get_state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.bank.set_state({k: v.cpu() if k != "data" else v for k, v in state.items()})

    def _apply(self, fn, recurse: bool = True):  # move the stored samples with the module
        out = super()._apply(fn, recurse)
        if self.bank.data is not None:
            self.bank.data = fn(self.bank.data)
        return out

    def extra_repr(self) -> str:
        return f"{type(self.bank).__name__}(capacity={self.bank.capacity}, num_classes={self.bank.num_classes})"
