"""Adaptation methods. Importing this package registers every built-in method and statistics policy."""
from . import (  # noqa: F401  (registration)
    adab2n, alpha_bn, alpha_bn_mcc, cotta, deyo, eata, iabn, lame, momentum_decay, momentum_decay_hbs, note, rbn,
    rdumb, regime_aware, roid, rotta, sar, shot_im, source, tbn, tbn_ema, tent, unmix_tns,
)
from ._adapter import Adapter, check_batch
from ._gradient import NO_BATCHNORM, gradient_adapter, optimizer_options, stats_options
from ._options import Derived, Option, OptionSet, When, when
from ._recipe import METHODS, WITHHELD, Recipe, Resolved, get_method, method_defaults, register_method
from ._stats_policy import STATS, StatsPolicy, get_stats, register_stats

__all__ = ["Adapter", "Derived", "METHODS", "NO_BATCHNORM", "Option", "OptionSet", "Recipe", "Resolved", "STATS",
           "StatsPolicy", "WITHHELD", "When", "check_batch", "get_method", "get_stats", "gradient_adapter",
           "method_defaults", "optimizer_options", "register_method", "register_stats", "stats_options", "when"]
