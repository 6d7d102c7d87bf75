"""Scaled Weight Standardization (Brock et al., NF-Nets 2021), the normalization-free
option FedWon (Zhuang & Lyu, ICLR 2024) uses: every norm layer removed, every conv scaled-WS."""
from __future__ import annotations

import torch
from torch import nn

from .ws_conv import _same_conv


class ScaledStdConv2d(nn.Conv2d):
    """Ŵ_o = g_o · γ · (W_o − mean(W_o)) / √(N · Var(W_o) + N · ε), N = fan-in, biased Var.

    Equal to timm's ``ScaledStdConv2d``: a learnable per-output gain g (init 1),
    γ = 1.0 and ε = 1e-6 by default. NF-ResNets pass γ ≈ 1.7139 for ReLU; FedWon's
    value is not published.
    """

    def __init__(self, *args, gamma: float = 1.0, ws_eps: float = 1e-6, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1, device=self.weight.device, dtype=self.weight.dtype))
        self.gamma = gamma
        self.ws_eps = ws_eps

    def standardized_weight(self) -> torch.Tensor:
        flat = self.weight.flatten(1)
        var, mean = torch.var_mean(flat, dim=1, keepdim=True, correction=0)
        scale = self.gamma * flat.shape[1] ** -0.5 * torch.rsqrt(var + self.ws_eps)
        return ((flat - mean) * scale).view_as(self.weight) * self.gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma={self.gamma}, ws_eps={self.ws_eps}"

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, gamma: float = 1.0, ws_eps: float = 1e-6) -> "ScaledStdConv2d":
        """A ScaledStdConv2d sharing ``conv``'s weight and bias, with a fresh gain of ones."""
        return _same_conv(cls, conv, gamma=gamma, ws_eps=ws_eps)
