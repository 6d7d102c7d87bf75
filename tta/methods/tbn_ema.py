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

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .policy import StatsAdapter, check_range
from .registry import register_method
from .stats import SourceStatsMixin, normalize_with_batch_stats, unbiased_factor


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


@register_method
class TestBatchNormEma(StatsAdapter):
    name = "tbn-ema"
    summary = "test-time BN with an EMA of test-batch statistics started at the source (reference: two passes)"
    paper = "Schneider et al., NeurIPS 2020 (EMA variant); mariodoebler/test-time-adaptation EMABatchNorm"
    option_defaults = {"momentum": None, "passes": 2}
    dataset_defaults = {"default": {"momentum": None, "passes": 2}}
    notes = "momentum=None: each BatchNorm's own; passes=1: cheaper one-pass variant, not the reference"
    min_batch_size = 2
    min_batch_reason = "one image gives no batch variance for fully connected BatchNorm1d layers"

    def __init__(self, model: nn.Module, *, channels_last: bool | None = None, **options: Any) -> None:
        super().__init__(model, channels_last=channels_last, **options)
        self.two_pass = self._hparams["passes"] == 2
        layers = [m for m in self.model.modules() if isinstance(m, EmaBatchNorm)]
        for layer in layers:
            layer.two_pass = self.two_pass
        if self._hparams["momentum"] is None:  # record what "each layer's own" resolved to
            rates = sorted({layer.momentum for layer in layers})
            self._hparams["momentum"] = rates[0] if len(rates) == 1 else "per-layer"

    @classmethod
    def validate(cls, options: dict[str, Any]) -> None:
        if options["momentum"] is not None:
            check_range("momentum", options["momentum"], 0.0, 1.0, cls.name)
            options["momentum"] = float(options["momentum"])
        if options["passes"] not in (1, 2):
            raise InputError(f"method 'tbn-ema': passes must be 1 or 2, got {options['passes']!r}; "
                             "2 is the reference (train-mode pass, then eval-mode pass)")
        options["passes"] = int(options["passes"])

    @classmethod
    def make_layer(cls, bn: nn.Module, momentum: float | None = None, passes: int = 2) -> nn.Module:
        return EmaBatchNorm(bn, momentum)

    def adapt_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.two_pass:
            return self.model(x)
        # The reference's EMABatchNorm: a train-mode forward updates every layer, its output is
        # discarded; an eval-mode forward then predicts with the updated statistics.
        self.model.train()
        try:
            self.model(x)
        finally:
            self.model.eval()
        return self.model(x)
