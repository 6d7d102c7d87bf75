"""PowerNorm (Shen et al., "PowerNorm: Rethinking Batch Normalization in Transformers", ICML 2020),
for conv feature maps: each pixel is a token, statistics run over (N, H, W)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


def group_scaling(x: torch.Tensor, group_num: int, eps: float = 1e-5) -> torch.Tensor:
    """x / √(mean over the channels of its group of x² + eps), per sample and pixel."""
    b, c, h, w = x.shape
    xg = x.reshape(b, group_num, c // group_num, h, w)
    return (xg * torch.rsqrt(xg.square().mean(dim=2, keepdim=True) + eps)).reshape(b, c, h, w)


class _PowerFunction(torch.autograd.Function):
    """Forward and approximate backward of PowerNorm's normalization (official ``PowerFunction``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_phi, ema_gz, eps, afwd, abkw, it, warmup_iters):  # noqa: ANN001
        c = x.shape[1]
        var = x.square().mean(dim=(0, 2, 3)).view(1, c, 1, 1)  # ψ²_B: quadratic mean, no centering
        z = x * torch.rsqrt((var if it <= warmup_iters else running_phi) + eps)
        if it < warmup_iters:  # cumulative average during warmup, then the EMA step below as well
            running_phi.mul_((it - 1) / it).add_(var / it)
        running_phi.mul_(afwd).add_((1 - afwd) * var)
        ctx.save_for_backward(z, var, weight)
        ctx.eps, ctx.abkw, ctx.ema_gz = eps, abkw, ema_gz  # a buffer updated in backward, not saved
        return z * weight.view(1, c, 1, 1) + bias.view(1, c, 1, 1)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        z, var, weight = ctx.saved_tensors
        ema_gz = ctx.ema_gz
        c = z.shape[1]
        g = grad_out * weight.view(1, c, 1, 1)
        approx = g - (1 - ctx.abkw) * ema_gz * z
        # the official code accumulates (add_) rather than averaging mean(approx · z) into ema_gz
        ema_gz.add_((approx * z).mean(dim=(0, 2, 3), keepdim=True))
        gx = approx * torch.rsqrt(var + ctx.eps)
        return gx, (grad_out * z).sum(dim=(0, 2, 3)), grad_out.sum(dim=(0, 2, 3)), *([None] * 7)


class PowerNorm2d(nn.Module):
    """Group scaling, then z = x / √(ψ² + ε) per channel with ψ² the quadratic mean
    (no mean subtraction), then y = γz + β.

    Training uses the batch's ψ²_B for the first ``warmup_iters`` steps and the
    running ψ² afterwards; the backward pass is the paper's approximate gradient
    with the running ``ema_gz`` (α_bkw). Test time uses the running ψ². Defaults
    are the official ``MaskPowerNorm``'s: α_fwd = α_bkw = 0.9, ε = 1e-5,
    warmup_iters = 10000, group_num = 1 (transformers pass the head count).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, alpha_fwd: float = 0.9, alpha_bkw: float = 0.9,
                 warmup_iters: int = 10000, group_num: int = 1) -> None:
        super().__init__()
        if group_num < 1 or num_features % group_num:
            raise InputError(f"group_num {group_num} must divide the {num_features} channels; e.g. group_num=1")
        self.num_features = num_features
        self.eps, self.afwd, self.abkw = eps, alpha_fwd, alpha_bkw
        self.warmup_iters, self.group_num = warmup_iters, group_num
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_phi", torch.ones(1, num_features, 1, 1))
        self.register_buffer("ema_gz", torch.zeros(1, num_features, 1, 1))
        self.register_buffer("iters", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, alpha_fwd={self.afwd}, alpha_bkw={self.abkw}, "
                f"warmup_iters={self.warmup_iters}, group_num={self.group_num}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise InputError(f"PowerNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}")
        x = group_scaling(x, self.group_num)
        if self.training:
            self.iters.add_(1)
            return _PowerFunction.apply(x, self.weight, self.bias, self.running_phi, self.ema_gz, self.eps,
                                        self.afwd, self.abkw, int(self.iters), self.warmup_iters)
        c = self.num_features
        z = x * torch.rsqrt(self.running_phi + self.eps)
        return z * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


class PowerNorm1d(PowerNorm2d):
    """PowerNorm over the last dimension of (B, L, D) tokens, statistics over all B·L tokens.

    The official ``MaskPowerNorm`` normalizes transformer tokens with group
    scaling over ``group_num`` = number of heads; pass ``group_num`` to match.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise InputError(f"PowerNorm1d expects (B, L, D) tokens, got shape {tuple(x.shape)}")
        # tokens become the pixels of a (B, D, L, 1) map, so the 2d statistics run over (B, L)
        return super().forward(x.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)
