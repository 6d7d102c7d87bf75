"""``source``: the unadapted model, the baseline every method is compared with."""
from __future__ import annotations

import torch
from torch import nn

from .base import Adapter
from .registry import register_method


@register_method
class Source(Adapter):
    name = "source"
    summary = "no adaptation: the pretrained model in eval mode"
    paper = "-"

    def __init__(self, model: nn.Module, *, channels_last: bool | None = None) -> None:
        super().__init__(model, channels_last=channels_last)
        self.model.eval()
        self.snapshot()

    def adapt_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
