"""Adaptation methods. Importing this package registers every built-in method."""
from . import source, tbn  # noqa: F401  (registration side effects)
from .base import Adapter, check_batch
from .registry import METHODS, get_method, method_defaults, register_method

__all__ = ["Adapter", "METHODS", "check_batch", "get_method", "method_defaults", "register_method"]
