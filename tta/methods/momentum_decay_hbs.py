"""``momentum-decay-hbs``: ``momentum-decay`` statistics plus the high-order consistency loss.

Liu et al. (MICCAI 2021) also enforce the "consistency of domain shareable high-order
batch statistics, i.e., scaling and shifting parameters", weighting each channel by its
transferability, and add self-entropy. Reconstruction (from the abstract, unverified, docs/methods.md; the
transferability is TransNorm's, thuml/TransNorm ``src/trans_norm.py``)::

    D_lc     = | mu_s / sqrt(var_s + eps) - mu_t / sqrt(var_t + eps) |      per layer l, channel c
    alpha_lc = C * (1 + D_lc)^-1 / sum_c' (1 + D_lc')^-1                     (no gradient)
    L_HBS    = sum_l sum_c (1 + alpha_lc) (|gamma_lc - gamma_s,lc| + |beta_lc - beta_s,lc|)
    L        = L_HBS + entropy_weight * mean_b H(softmax(logits_b))

with (mu_t, var_t) the layer's adapted running statistics after this batch. One Adam
step per batch on gamma, beta, returning the pre-update logits, as ``tent``.
``entropy_weight`` = 1 and lr = 1e-3 are choices of this library (the paper's values
could not be read).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .momentum_decay import DecayingMomentumBatchNorm
from .objective import GradientAdapter
from .registry import register_method
from .tent import softmax_entropy


def transferability(layer: DecayingMomentumBatchNorm) -> torch.Tensor:
    """TransNorm's per-channel weight alpha (sums to C): high where source and target agree."""
    eps = layer.eps
    d = (layer.source_mean / torch.sqrt(layer.source_var + eps)
         - layer.running_mean / torch.sqrt(layer.running_var + eps)).abs()
    prob = 1.0 / (1.0 + d)
    return layer.num_features * prob / prob.sum()


@register_method
class MomentumDecayHBS(GradientAdapter):
    name = "momentum-decay-hbs"
    summary = "momentum-decay statistics + transferability-weighted |gamma, beta - source| loss + entropy"
    paper = "Liu et al., MICCAI 2021 (arXiv 2106.12497); weights: TransNorm (Wang et al. 2019)"
    default_norm = "momentum-decay"
    dataset_defaults = {"default": {"norm": "momentum-decay", "entropy_weight": 1.0, "optimizer": "adam", "lr": 1e-3}}
    min_batch_size = 2
    notes = "reconstructed from the abstract (no code); entropy_weight and lr are this library's choices"

    def __init__(self, model: nn.Module, *, entropy_weight: float = 1.0, **options: Any) -> None:
        if not entropy_weight >= 0:
            raise InputError(f"method {self.name!r}: entropy_weight must be >= 0, got {entropy_weight!r}; pass e.g. 1.0")
        norm = options.get("norm") or self.default_norm
        if norm != "momentum-decay":
            raise InputError(f"method {self.name!r} needs norm='momentum-decay', got {norm!r}; drop the norm option")
        super().__init__(model, **options)
        self.entropy_weight = float(entropy_weight)
        self.layers = [m for m in self.model.modules()
                       if isinstance(m, DecayingMomentumBatchNorm) and m.weight is not None and m.bias is not None]
        for i, layer in enumerate(self.layers):  # the source affine, fixed; not state (reset restores gamma, beta)
            self.register_buffer(f"source_affine_{i}", torch.stack([layer.weight.detach(), layer.bias.detach()]).clone(),
                                 persistent=False)

    def consistency(self) -> torch.Tensor:
        """L_HBS over every adapted layer."""
        total = torch.zeros((), device=self.params[0].device)
        for i, layer in enumerate(self.layers):
            src = getattr(self, f"source_affine_{i}")
            with torch.no_grad():
                alpha = transferability(layer)
            diff = (layer.weight - src[0]).abs() + (layer.bias - src[1]).abs()
            total = total + ((1.0 + alpha) * diff).sum()
        return total

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        return self.consistency() + self.entropy_weight * softmax_entropy(logits).mean()

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "entropy_weight": self.entropy_weight}
