"""Ghost Batch Normalization (Hoffer, Hubara & Soudry, NeurIPS 2017)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics come from ghost batches of ``virtual_batch_size``.

    A batch of B images is split in order into ceil(B / G) ghost batches of G
    images (the last one holds the remainder); each is normalized with its own
    mean and biased variance. The running statistics take one EMA step per ghost
    batch, in order, exactly as if the ghost batches had been separate forwards
    (the official code runs one forward per ``input.chunk``). At test time the
    layer is a plain BatchNorm2d with running statistics, so every BN-statistics
    adapter applies to it. Default G = 256, the paper's CIFAR-10 example
    (B = 2048, G = 256); with batches of at most G it equals BatchNorm2d.
    """

    def __init__(self, num_features: int, virtual_batch_size: int = 256, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        if virtual_batch_size < 1:
            raise InputError(f"virtual_batch_size must be >= 1, got {virtual_batch_size}; e.g. 32")
        if momentum is None:
            raise InputError("GhostBatchNorm2d needs a float momentum (cumulative averaging is not supported); pass momentum=0.1")
        self.virtual_batch_size = virtual_batch_size

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch_size={self.virtual_batch_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise InputError(f"GhostBatchNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}")
        g = self.virtual_batch_size
        if not self.training or x.shape[0] <= g:
            return super().forward(x)
        b, c = x.shape[:2]
        full = (b // g) * g
        parts = [self._normalize(x[:full].reshape(b // g, g, *x.shape[1:]))]
        means, vars_ = [parts[0][1]], [parts[0][2]]
        if full < b:
            tail = self._normalize(x[full:].unsqueeze(0))
            parts.append(tail)
            means.append(tail[1])
            vars_.append(tail[2])
        out = torch.cat([p[0].reshape(-1, *x.shape[1:]) for p in parts])
        counts = [g] * (b // g) + ([b - full] if full < b else [])
        self._update_running(torch.cat(means), torch.cat(vars_), x.new_tensor(counts, dtype=x.dtype), x.shape[2] * x.shape[3])
        if self.affine:
            out = out * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return out

    def _normalize(self, xg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # xg: (n_ghost, G, C, H, W); statistics per ghost batch and channel
        var, mean = torch.var_mean(xg, dim=(1, 3, 4), keepdim=True, correction=0)
        out = (xg - mean) * torch.rsqrt(var + self.eps)
        return out, mean.flatten(1), var.flatten(1)

    @torch.no_grad()
    def _update_running(self, means: torch.Tensor, vars_: torch.Tensor, counts: torch.Tensor, hw: int) -> None:
        if not self.track_running_stats:
            return
        n = means.shape[0]
        m = self.momentum
        elems = counts * hw
        unbiased = vars_ * (elems / (elems - 1).clamp(min=1)).unsqueeze(1)
        # n sequential EMA steps in closed form: r_n = (1-m)^n r_0 + sum_i m (1-m)^(n-1-i) s_i
        w = m * (1 - m) ** torch.arange(n - 1, -1, -1, dtype=means.dtype, device=means.device)
        keep = (1 - m) ** n
        self.running_mean.mul_(keep).add_((w.unsqueeze(1) * means).sum(0))
        self.running_var.mul_(keep).add_((w.unsqueeze(1) * unbiased).sum(0))
        self.num_batches_tracked.add_(n)


def ghost_batch_norm(num_features: int, **options) -> GhostBatchNorm2d:
    return GhostBatchNorm2d(num_features, **options)


__all__ = ["GhostBatchNorm2d", "ghost_batch_norm"]

