"""``iabn``: NOTE's instance-aware BatchNorm as a statistics policy (Gong et al., NeurIPS 2022).

Every BatchNorm2d becomes an ``InstanceAwareBatchNorm`` (``tta.methods.iabn_layer``)
built from the pretrained layer without retraining, as the devavratTomar/unmixtns port
does; a BatchNorm1d stays a BatchNorm1d with running-statistics momentum ``momentum``.
In eval mode IABN soft-shrinks each instance's statistics towards the running ones and
changes nothing, so the statistics-only method ``iabn`` is the port's ``note_vanilla``
inference. ``note`` switches to train mode for its memory updates, where the running
statistics move with ``momentum``.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .iabn_layer import DEFAULT_K, DEFAULT_MOMENTUM, DEFAULT_SKIP, make_layer
from .options import Option, OptionSet
from .policy import StatsPolicy, register_stats

INF = float("inf")


@register_stats
class InstanceAwareBN(StatsPolicy):
    name = "iabn"
    summary = "NOTE's instance-aware BatchNorm on a pretrained BN model (inference only as a method)"
    paper = "Gong et al., NeurIPS 2022; TaesikGong/NOTE, devavratTomar/unmixtns port"
    options = OptionSet("iabn", (
        Option("k", float, DEFAULT_K, "soft-shrinkage width in standard errors", low=0, high=INF),
        Option("momentum", float, DEFAULT_MOMENTUM, "running-statistics momentum of train-mode forwards",
               low=0, high=1),
        Option("skip_threshold", int, DEFAULT_SKIP, "feature maps of at most this many pixels use the "
               "reference statistics alone", low=0, high=INF),
    ))

    @classmethod
    def make_layer(cls, bn: nn.Module, k: float = DEFAULT_K, momentum: float = DEFAULT_MOMENTUM,
                   skip_threshold: int = DEFAULT_SKIP) -> nn.Module:
        return make_layer(bn, k, momentum, skip_threshold)

    @classmethod
    def swap(cls, model: nn.Module, options: dict[str, Any]) -> None:
        super().swap(model, options)
        model.eval()  # the new layers are built in train mode; eval-mode IABN changes nothing
