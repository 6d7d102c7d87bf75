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

import torch
from torch import nn

from ._adapter import Adapter
from ._entropy import log_softmax_entropy
from ._gradient import gradient_adapter, optimizer_options, stats_options
from ._options import Option
from ._recipe import Resolved, register_method
from .momentum_decay import DecayingMomentumBatchNorm


def transferability(layer: DecayingMomentumBatchNorm) -> torch.Tensor:
    """TransNorm's per-channel weight alpha (sums to C): high where source and target agree."""
    eps = layer.eps
    d = (layer.source_mean / torch.sqrt(layer.source_var + eps)
         - layer.running_mean / torch.sqrt(layer.running_var + eps)).abs()
    prob = 1.0 / (1.0 + d)
    return layer.num_features * prob / prob.sum()


class HighOrderConsistency(nn.Module):
    """L_HBS + entropy_weight * entropy; holds the source affine of every adapted layer as buffers.

    The source affine is fixed, so its buffers are not persistent (``reset()`` restores gamma,
    beta themselves).
    """

    def __init__(self, model: nn.Module, entropy_weight: float) -> None:
        super().__init__()
        self.entropy_weight = entropy_weight
        self.layers = [m for m in model.modules()
                       if isinstance(m, DecayingMomentumBatchNorm) and m.weight is not None and m.bias is not None]
        for i, layer in enumerate(self.layers):
            affine = torch.stack([layer.weight.detach(), layer.bias.detach()]).clone()
            self.register_buffer(f"source_affine_{i}", affine, persistent=False)

    def consistency(self) -> torch.Tensor:
        """L_HBS over every adapted layer."""
        total = torch.zeros((), device=self.layers[0].weight.device) if self.layers else torch.zeros(())
        for i, layer in enumerate(self.layers):
            src = getattr(self, f"source_affine_{i}")
            with torch.no_grad():
                alpha = transferability(layer)
            diff = (layer.weight - src[0]).abs() + (layer.bias - src[1]).abs()
            total = total + ((1.0 + alpha) * diff).sum()
        return total

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.consistency() + self.entropy_weight * log_softmax_entropy(logits).mean()

    def __repr__(self) -> str:  # the layers belong to the model; keep them out of the module tree
        return f"{type(self).__name__}(entropy_weight={self.entropy_weight}, layers={len(self.layers)})"


@register_method(
    "momentum-decay-hbs",
    summary="momentum-decay statistics + transferability-weighted |gamma, beta - source| loss + entropy",
    paper="Liu et al., MICCAI 2021 (arXiv 2106.12497); weights: TransNorm (Wang et al. 2019)",
    options=(*stats_options("momentum-decay", choices=("momentum-decay",)),
             Option("entropy_weight", float, 1.0, "weight of the entropy term", low=0),
             *optimizer_options("adam", 1e-3)),
    notes="reconstructed from the abstract (no code); entropy_weight and lr are this library's choices",
    min_batch_size=2,
)
def momentum_decay_hbs(model: nn.Module, opts: Resolved) -> Adapter:
    return gradient_adapter(model, opts, lambda student: HighOrderConsistency(student, opts["entropy_weight"]),
                            min_batch_size=2)
