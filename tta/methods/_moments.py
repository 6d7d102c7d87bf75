"""Tensor math of the normalization layers: batch and instance moments, normalization, source statistics."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..errors import TTAError


def reduce_dims(x: torch.Tensor) -> list[int]:
    """Dimensions BatchNorm reduces over: all but the channel dimension 1."""
    return [0] + list(range(2, x.dim()))


class _Moments(torch.autograd.Function):
    """Mean and biased variance over ``dims`` (kept), differentiable in ``x``.

    ``torch.var_mean`` (Welford) and its autograd backward run several times slower than plain sums on
    channels_last CPU tensors. Here the forward is two passes of sums (mean, then the mean
    square deviation: as exact as Welford, unlike E[x^2] - E[x]^2) and the backward the closed
    form dL/dx = g_mean / n + g_var * 2 (x - mean) / n, one fused multiply-add over ``x``.
    First-order only: no method here differentiates twice.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        mean = x.mean(dims, keepdim=True)
        dev = x - mean
        var = dev.square_().mean(dims, keepdim=True)
        ctx.save_for_backward(x, mean)
        ctx.n = x.numel() // mean.numel()
        return mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_mean: torch.Tensor, g_var: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, mean = ctx.saved_tensors
        scale = g_var * (2.0 / ctx.n)
        shift = g_mean / ctx.n - mean * scale
        return torch.addcmul(shift, x, scale), None


def moments(x: torch.Tensor, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of ``x`` over ``dims``, with those dims dropped (see ``_Moments``)."""
    mean, var = _Moments.apply(x, tuple(dims))
    if mean.dtype in (torch.float16, torch.bfloat16):  # under autocast: float32 statistics, as the buffers
        mean, var = mean.float(), var.float()
    return mean.squeeze(dims), var.squeeze(dims)


def batch_stats(x: torch.Tensor, unbiased: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and variance over (N, *spatial), as BatchNorm computes them."""
    mean, var = moments(x, reduce_dims(x))
    return mean, (var * unbiased_factor(x) if unbiased else var)


def instance_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, channel) mean and biased variance over the spatial dims: two (B, C) tensors."""
    return moments(x, list(range(2, x.dim())))


def grouped_batch_stats(x: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of each of ``n_groups`` equal consecutive groups of samples,
    as separate BatchNorm calls would compute them: two (G, C) tensors."""
    if n_groups < 1 or x.shape[0] % n_groups:
        raise ValueError(f"{x.shape[0]} samples do not split into {n_groups} equal groups")
    xv = x.unflatten(0, (n_groups, x.shape[0] // n_groups))
    return moments(xv, [1, *range(3, xv.dim())])


def normalize_grouped(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """``normalize`` with per-group (G, C) statistics: row g normalizes the g-th of G equal groups of samples."""
    per_group = x.shape[0] // mean.shape[0]
    return normalize_per_sample(x, mean.repeat_interleave(per_group, 0), var.repeat_interleave(per_group, 0),
                                weight, bias, eps)


def unbiased_factor(x: torch.Tensor) -> float:
    """n/(n-1) with n the number of values per channel, PyTorch's running-variance correction."""
    n = x.numel() // x.shape[1]
    return n / (n - 1) if n > 1 else 1.0


def normalize(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """y = weight * (x - mean) / sqrt(var + eps) + bias with per-channel (C,) statistics.

    Differentiable in ``mean`` and ``var`` too (gradient methods on mixed statistics),
    which PyTorch's eval-mode ``batch_norm`` kernel is not.
    """
    if not (mean.requires_grad or var.requires_grad):
        return torch.nn.functional.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
    return normalize_per_sample(x, mean.unsqueeze(0), var.unsqueeze(0), weight, bias, eps)


def normalize_per_sample(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """The same with per-sample (B, C) statistics, as one fused multiply-add over ``x``."""
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    view = scale.shape + (1,) * (x.dim() - 2)
    return torch.addcmul(shift.view(view), x, scale.view(view))


def needs_exact_grad(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """Whether autograd must see the whole computation (gradient methods): then use the plain path."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p is not None and p.requires_grad for p in params)


class Scratch:
    """One reusable buffer for a layer-input-sized temporary, shared by the layers of a model.

    Not state: it is never saved, and it is reallocated when the device or dtype changes
    or when a buffer made under ``torch.inference_mode()`` is needed outside it. On CPU a fresh activation-sized allocation costs more
    (page faults) than the arithmetic that fills it.
    """

    def __init__(self) -> None:
        self.buf: torch.Tensor | None = None

    def like(self, x: torch.Tensor) -> torch.Tensor:
        """An uninitialized tensor with the shape and strides of ``x`` (dense ``x`` only)."""
        b = self.buf
        # an inference tensor cannot be written outside inference mode (the reverse is fine)
        if (b is None or b.numel() < x.numel() or b.device != x.device or b.dtype != x.dtype
                or (b.is_inference() and not torch.is_inference_mode_enabled())):
            b = self.buf = torch.empty(x.numel(), device=x.device, dtype=x.dtype)
        return b.as_strided(x.shape, x.stride())

    def __deepcopy__(self, memo: dict) -> "Scratch":
        return Scratch()


def _dense(x: torch.Tensor) -> bool:
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def fast_instance_stats(x: torch.Tensor, scratch: Scratch | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, channel) mean and biased variance as plain sums, outside autograd.

    ``torch.var_mean`` (Welford) runs several times slower than a sum on CPU for
    channels_last tensors; sums of x and x^2 are cheap. The one-pass variance
    E[x^2] - E[x]^2 loses digits only when |mean| >> std, far from BatchNorm inputs.
    """
    dims = list(range(2, x.dim()))
    length = x[0, 0].numel()
    m = x.sum(dims) / length
    sq = torch.mul(x, x, out=scratch.like(x)) if scratch is not None and _dense(x) else x * x
    v = (sq.sum(dims) / length - m.square()).clamp_min_(0.0)
    return m, v


def fast_batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over (N, *spatial), outside autograd, allocating nothing
    activation-sized.

    On CPU: PyTorch's train-mode BatchNorm statistics kernel on its own (``torch.batch_norm_update_stats``
    without running statistics: a pass for the mean, one for the mean square deviation, fast on
    channels_last). Elsewhere: ``torch.var_mean``, one Welford kernel on an accelerator.
    Reduced-precision inputs give float32 statistics.
    """
    if x.device.type == "cpu":
        mean, var = torch.batch_norm_update_stats(x, None, None, 1.0)
    else:
        var, mean = torch.var_mean(x, reduce_dims(x), correction=0)
    if mean.dtype in (torch.float16, torch.bfloat16):
        mean, var = mean.float(), var.float()
    return mean, var


def affine_normalize(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """``normalize`` with per-channel (C,) statistics as one fused multiply-add over ``x``: the statistics and
    the affine parameters fold into one scale and one shift per channel. On a channels_last CPU tensor
    this is faster than PyTorch's eval-mode ``batch_norm`` kernel (measured on a 200x16x32x32 input)."""
    return normalize_per_sample(x, mean.unsqueeze(0), var.unsqueeze(0), weight, bias, eps)


StatsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def normalize_with_batch_stats(
    x: torch.Tensor, stats_fn: StatsFn, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """Normalize with (mean, var) = stats_fn(batch_mean, biased batch_var, x), all per channel.

    Outside autograd: the batch statistics (``fast_batch_stats``), then one fused multiply-add with
    whatever statistics ``stats_fn`` returns (``affine_normalize``): three passes over ``x``, and no
    activation-sized temporary besides the output; under autograd the plain differentiable computation.
    """
    if needs_exact_grad(x, weight, bias) or x.numel() == x.shape[1]:  # one value per channel: no variance
        bm, bv = batch_stats(x)
        mean, var = stats_fn(bm, bv, x)
        if torch.is_grad_enabled():
            # A stateful policy returns its running buffers and updates them in place on its next forward
            # (DeYO's and ROID's extra forward before backward): the graph keeps this batch's values.
            mean = mean if mean.requires_grad else mean.clone()
            var = var if var.requires_grad else var.clone()
        return normalize(x, mean, var, weight, bias, eps)
    bm, bv = fast_batch_stats(x)
    mean, var = stats_fn(bm, bv, x)
    return affine_normalize(x, mean, var, weight, bias, eps)


class SourceStatsMixin:
    """Copies a BatchNorm's affine parameters and source statistics into the new layer."""

    def copy_from_bn(self, bn: nn.Module) -> None:
        self.num_features = bn.num_features
        self.eps = bn.eps
        # PyTorch's momentum=None means a cumulative average; 0.1 is its default EMA rate.
        self.source_momentum = 0.1 if bn.momentum is None else float(bn.momentum)
        self.weight = None if bn.weight is None else nn.Parameter(bn.weight.detach().clone())
        self.bias = None if bn.bias is None else nn.Parameter(bn.bias.detach().clone())
        if bn.running_mean is None:
            raise TTAError(
                "a BatchNorm layer has no running statistics (track_running_stats=False), so there is no "
                "source to adapt from; use a model whose BatchNorm layers track running statistics"
            )
        self.register_buffer("source_mean", bn.running_mean.detach().clone())
        self.register_buffer("source_var", bn.running_var.detach().clone())


class SourceBatchNorm(SourceStatsMixin, nn.Module):
    """Eval-mode BatchNorm frozen at the source statistics, whatever ``self.training`` says."""

    def __init__(self, bn: nn.Module) -> None:
        super().__init__()
        self.copy_from_bn(bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.source_mean, self.source_var, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, frozen source statistics"
