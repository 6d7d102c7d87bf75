"""RMSNorm (Zhang & Sennrich, NeurIPS 2019) and CRMSNorm (Jiang et al., NeurIPS 2023)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


def rms_norm(x: torch.Tensor, eps: float = 1e-8, partial: float = -1.0) -> torch.Tensor:
    """x / (RMS(x) + eps) over the last dim; RMS from the first ⌊p·d⌋ dims when 0 ≤ p ≤ 1."""
    d = x.shape[-1]
    part = x[..., : int(d * partial)] if 0.0 <= partial <= 1.0 else x
    rms = part.norm(dim=-1, keepdim=True) * part.shape[-1] ** -0.5
    return x / (rms + eps)


class RMSNorm(nn.Module):
    """y = g ⊙ x / (RMS(x) + ε) over the last dimension, RMS = ‖x‖₂ / √d.

    Official ``rmsnorm_torch.py`` defaults: ε = 1e-8 added *outside* the square
    root, partial RMSNorm off (p = −1), bias off.
    """

    def __init__(self, d: int, eps: float = 1e-8, partial: float = -1.0, bias: bool = False) -> None:
        super().__init__()
        self.d, self.eps, self.partial = d, eps, partial
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rms_norm(x, self.eps, self.partial) * self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}, partial={self.partial}, bias={self.bias is not None}"


class RMSNorm2d(RMSNorm):
    """RMSNorm over the C channels at each pixel of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise InputError(f"RMSNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}")
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def crms_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Compressed RMSNorm of the zero-mean vector [x, −Σx] ∈ R^{d+1} stored as x ∈ R^d.

    y = x · rsqrt((Σx² + (Σx)²) / (d + 1) + eps): equal to LayerNorm (without
    affine, ε inside) of the implied d+1 vector, with its last entry dropped.
    """
    d = x.shape[-1] + 1
    energy = x.square().sum(-1, keepdim=True) + x.sum(-1, keepdim=True).square()
    return x * torch.rsqrt(energy / d + eps)


class CRMSNorm(nn.Module):
    """CRMSNorm over the last dimension (ε = 1e-5 as in the official repository).

    The official Pre-CRMSNorm folds the gain into the next linear layer; here an
    optional per-dimension gain (``elementwise_affine``) stands in for it.
    """

    def __init__(self, d: int, eps: float = 1e-5, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = crms_norm(x, self.eps)
        return y * self.weight if self.weight is not None else y

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}, elementwise_affine={self.weight is not None}"


class CRMSNorm2d(CRMSNorm):
    """CRMSNorm over the C channels at each pixel: the C channels hold a compressed zero-mean (C+1)-vector."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise InputError(f"CRMSNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}")
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
