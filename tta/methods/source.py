"""``source``: the unadapted model, the baseline every method is compared with.

As a statistics policy of a gradient method (``stats="source"``) it keeps the model's
BatchNorm layers in eval mode with their source statistics; ``stats="none"`` is the
same for models without BatchNorm (their own norm layers are kept as they are).
"""
from __future__ import annotations

from ._options import OptionSet
from ._stats_policy import StatsPolicy, register_stats


@register_stats
class SourcePolicy(StatsPolicy):
    name = "source"
    summary = "no adaptation: the pretrained model in eval mode"
    options = OptionSet("source")
    swaps_batchnorm = False


@register_stats
class NoStatsPolicy(StatsPolicy):
    name = "none"
    summary = "keep the model's own norm layers (models without BatchNorm)"
    options = OptionSet("none")
    swaps_batchnorm = False
