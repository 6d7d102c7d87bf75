"""``tbn-ema``: test-time BatchNorm with running statistics updated as an EMA of test batches.

The reference is ``EMABatchNorm`` of mariodoebler/test-time-adaptation
(``classification/methods/bn.py``, also in the UnMix-TNS fork). It wraps the whole
model and runs it twice per batch:

1. one forward in train mode, whose output is discarded: every BatchNorm normalizes
   with its batch statistics and updates its running statistics,
   ``running <- (1 - m) * running + m * batch`` (unbiased batch variance, as PyTorch);
2. one forward in eval mode that predicts with the updated running statistics.

Because the first pass is a train-mode forward, each layer's batch statistics are
computed from inputs normalized with *batch* statistics upstream. That is the
default here (``passes=2``). ``passes=1`` is a cheaper variant that updates and then
normalizes layer by layer in a single forward, so later layers see inputs normalized
with the updated running statistics instead; it is not the reference and measures
worse on label-correlated streams (docs/methods.md, "tbn-ema").

m is each BatchNorm's own ``momentum`` (0.1 in every backbone here) unless
``momentum`` is given. The state carries across batches; ``reset()`` returns to the
source statistics. As the statistics half of a gradient method
(``norm="tbn-ema"``) the layers run the one-pass update, since such a method makes
one forward per batch.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._moments import SourceStatsMixin, normalize_with_batch_stats, unbiased_factor
from ._options import Option, OptionSet
from ._stats_policy import StatsPolicy, register_stats


class EmaBatchNorm(SourceStatsMixin, nn.Module):
    """BatchNorm that normalizes with an EMA of test-batch statistics, started at the source.

    With ``two_pass`` it behaves like PyTorch's BatchNorm: train mode updates the running
    statistics and normalizes with the batch's; eval mode normalizes with the running ones.
    Without it, every forward updates and then normalizes with the updated statistics.
    """

    def __init__(self, bn: nn.Module, momentum: float | None) -> None:
        super().__init__()
        self.copy_from_bn(bn)
        self.momentum = self.source_momentum if momentum is None else float(momentum)
        self.two_pass = False
        self.register_buffer("running_mean", self.source_mean.clone())
        self.register_buffer("running_var", self.source_var.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.two_pass:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training, self.momentum, self.eps)
        return normalize_with_batch_stats(x, self.update, self.weight, self.bias, self.eps)

    @torch.no_grad()
    def update(self, mean: torch.Tensor, var: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(var * unbiased_factor(x), self.momentum)
        return self.running_mean, self.running_var

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, two_pass={self.two_pass}"


def two_pass_step(adapter: Any, x: torch.Tensor) -> torch.Tensor:
    """The reference's EMABatchNorm: a train-mode forward updates every layer and is discarded;
    an eval-mode forward then predicts with the updated statistics."""
    adapter.model.train()
    try:
        adapter.model(x)
    finally:
        adapter.model.eval()
    return adapter.model(x)


@register_stats
class TestBatchNormEmaPolicy(StatsPolicy):
    name = "tbn-ema"
    summary = "test-time BN with an EMA of test-batch statistics started at the source (reference: two passes)"
    paper = "Schneider et al., NeurIPS 2020 (EMA variant); mariodoebler/test-time-adaptation EMABatchNorm"
    options = OptionSet("tbn-ema", (
        Option("momentum", float, None, "EMA rate m of the running statistics (None: each BatchNorm's own)",
               low=0, high=1, nullable=True),
        Option("passes", int, 2, "2: the reference (train-mode pass, then eval-mode pass); 1: cheaper one-pass "
               "variant, not the reference", choices=(1, 2)),
    ))
    notes = "momentum=None: each BatchNorm's own; passes=1: cheaper one-pass variant, not the reference"
    min_batch_size = 2
    min_batch_reason = "one image gives no batch variance for fully connected BatchNorm1d layers"

    @classmethod
    def make_layer(cls, bn: nn.Module, momentum: float | None, passes: int) -> nn.Module:
        return EmaBatchNorm(bn, momentum)

    @classmethod
    def configure(cls, model: nn.Module, options: dict[str, Any]) -> Callable[[Any, torch.Tensor], torch.Tensor] | None:
        # Only the statistics-only method runs two passes; inside a gradient method (one forward
        # per batch) the layers keep the one-pass update.
        if options["passes"] != 2:
            return None
        for layer in model.modules():
            if isinstance(layer, EmaBatchNorm):
                layer.two_pass = True
        return two_pass_step
