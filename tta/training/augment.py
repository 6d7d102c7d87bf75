"""Standard CIFAR augmentation done on whole uint8 batches (no per-image loop)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random ``padding``-pixel zero-padded crop and random horizontal flip.

    ``images`` is (B, H, W, C) uint8; the result has the same shape. Every image
    draws its own offsets and flip from ``generator``; the crop is one gather.
    """
    b, h, w, _ = images.shape
    padded = F.pad(images, (0, 0, padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    flip = torch.rand(b, 1, generator=generator) < 0.5
    cols = torch.arange(w).expand(b, w)
    cols = torch.where(flip, w - 1 - cols, cols) + ox
    rows = torch.arange(h).expand(b, h) + oy
    batch = torch.arange(b).view(b, 1, 1)
    return padded[batch, rows.view(b, h, 1), cols.view(b, 1, w)]
