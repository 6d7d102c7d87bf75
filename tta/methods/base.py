"""Checks every adapter applies to a batch before adapting on it (the ``Adapter`` is in adapter.py)."""
from __future__ import annotations

import torch

from ..errors import InputError


def check_batch(x: object, min_batch_size: int, method: str, reason: str = "") -> None:
    """Raise ``InputError`` naming the problem and the fix for a malformed batch."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected a torch.Tensor batch, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"expected a batch of shape (B, C, H, W), got shape {tuple(x.shape)}; add a batch dimension")
    if not x.is_floating_point():
        raise InputError(
            f"expected float images in [0, 1], got dtype {x.dtype}; convert with x.float() / 255"
        )
    if x.shape[0] < min_batch_size:
        why = f" ({reason})" if reason else ""
        raise InputError(
            f"method {method!r} needs batches of at least {min_batch_size} images{why}, got {x.shape[0]}; "
            "use a larger batch or a method that supports single images (e.g. unmix-tns, source)"
        )
    if not torch.isfinite(x).all():
        raise InputError("the batch contains NaN or infinite values; clean the input images")
