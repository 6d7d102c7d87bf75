"""Entropy, entropy margins and masked means shared by the entropy-filtering methods.

SAR, ETA/EATA, DeYO and RDumb minimize the entropy of confident samples only. The
filters are boolean masks over the batch (no indexing, so shapes stay fixed); a masked
mean over an empty selection is 0 with zero gradients, which matches the reference
codes' ``entropys[empty].mean()`` (NaN value, zero gradients) in what reaches the
parameters. Entropy is H(z) = -Σ softmax(z) · log_softmax(z), the form of those codes
(and of ROID's certainty weights).

``log_softmax_entropy`` is the same quantity computed as -Σ exp(log_softmax(z)) · log_softmax(z):
it rounds differently (about 1e-7 in float32), and TENT, α-BN + MCC and the HBS consistency
recipe were recorded with it, so they keep it.
"""
from __future__ import annotations

import math

import torch


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy of softmax(logits) over dim 1, shape (B,)."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def log_softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy of softmax(logits) over dim 1 from the log-probabilities alone, shape (B,)."""
    log_p = torch.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def entropy_margin(num_classes: int, factor: float) -> float:
    """``factor · ln C``: E0 = 0.4 ln C (EATA/SAR/DeYO weighting), τ = 0.5 ln C (DeYO filter)."""
    if num_classes < 2:
        raise ValueError(f"entropy margins need at least 2 classes, got {num_classes}")
    return factor * math.log(num_classes)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values[mask]``; 0 (with zero gradients) when nothing is selected."""
    picked = torch.where(mask, values, torch.zeros_like(values))
    return picked.sum() / mask.sum().clamp_min(1)


def all_finite(*tensors: torch.Tensor) -> bool:
    """Whether every entry of every tensor is finite (one device sync)."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
