"""Adaptation methods. Importing this package registers every built-in method."""
from . import adab2n, alpha_bn, alpha_bn_mcc, momentum_decay, momentum_decay_hbs, source, tbn, tbn_ema, tent, unmix_tns  # noqa: F401  (registration)
from .base import Adapter, check_batch
from .registry import METHODS, get_method, method_defaults, register_method

__all__ = ["Adapter", "METHODS", "check_batch", "get_method", "method_defaults", "register_method"]
