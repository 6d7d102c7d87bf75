"""Weight Standardization (Qiao et al. 2019): convolutions with standardized kernels."""
from __future__ import annotations

import torch
from torch import nn


def standardize(weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(W_o − mean(W_o)) / (std(W_o) + eps) over (C_in, k, k) for every output o; std unbiased.

    ε is added to the std as in the WeightStandardization README; the BCN
    repository's ``layers.py`` uses √(var + 1e-5) instead, which differs only
    for near-constant kernels.
    """
    flat = weight.flatten(1)
    std, mean = torch.std_mean(flat, dim=1, keepdim=True)
    return ((flat - mean) / (std + eps)).view_as(weight)


def _same_conv(cls: type[nn.Conv2d], conv: nn.Conv2d, **extra) -> nn.Conv2d:
    """A ``cls`` conv with ``conv``'s hyperparameters that shares its weight and bias tensors."""
    new = cls(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
        device=conv.weight.device, dtype=conv.weight.dtype, **extra,
    )
    new.weight = conv.weight
    new.bias = conv.bias
    return new


class WSConv2d(nn.Conv2d):
    """nn.Conv2d whose kernel is standardized on every forward; same parameters and state_dict keys."""

    def __init__(self, *args, ws_eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ws_eps = ws_eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardize(self.weight, self.ws_eps), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ws_eps={self.ws_eps}"

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, ws_eps: float = 1e-5) -> "WSConv2d":
        """A WSConv2d that shares ``conv``'s weight and bias."""
        return _same_conv(cls, conv, ws_eps=ws_eps)
