"""LayerNorm over the channels of a conv feature map (the ConvNeXt ``LayerNorm2d`` form)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError


class LayerNorm2d(nn.LayerNorm):
    """y = γ ⊙ (x − E_c[x]) / √(Var_c[x] + ε) + β over the C channels at each pixel.

    Biased variance, ε = 1e-5 (``nn.LayerNorm``). LayerNorm over (C, H, W) per
    sample, the form of Wu & He's GN paper, is ``gn`` with ``num_groups=1``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, elementwise_affine: bool = True) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise InputError(f"LayerNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}")
        # the permute is a free view for channels_last inputs
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)
