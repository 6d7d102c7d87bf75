"""Snapshot and restore of a module's buffers, for passes that must leave its running statistics as they were."""
from __future__ import annotations

import torch
from torch import nn


def snapshot_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every buffer of ``model``, by name."""
    return {name: buf.clone() for name, buf in model.named_buffers()}


def restore_buffers(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> list[str]:
    """Put the snapshot back; returns the names of the buffers that had changed, in model order."""
    changed = [name for name, old in snapshot.items() if not torch.equal(old, model.get_buffer(name))]
    with torch.no_grad():
        for name in changed:
            model.get_buffer(name).copy_(snapshot[name])
    return changed
