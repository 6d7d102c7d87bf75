"""Method registry: a new method is one file plus ``@register_method``."""
from __future__ import annotations

from typing import Any, TypeVar

from ..errors import UnknownNameError
from ..registry import Registry
from .base import Adapter

METHODS: Registry[type[Adapter]] = Registry("method")

#: Methods a user may ask for by name that tta deliberately does not build, and why.
WITHHELD: dict[str, str] = {
    "core": (
        "method 'core' (You, Li & Zhao, arXiv 2110.04065) is not available: its class-correlation loss "
        "could not be verified and tta does not guess it. Use 'alpha-bn' (its statistics part) or "
        "'alpha-bn-mcc' (alpha-bn with the Minimum Class Confusion loss, a different method)"
    ),
}

A = TypeVar("A", bound=type[Adapter])


def register_method(cls: A) -> A:
    """Class decorator: make ``cls`` available as ``tta.adapt(model, method=cls.name)``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    METHODS.add(cls.name, cls)
    return cls


def get_method(name: str) -> type[Adapter]:
    if name in WITHHELD and name not in METHODS:
        raise UnknownNameError(WITHHELD[name])
    return METHODS.get(name)


def method_defaults(name: str, dataset: str | None = None, shift: str | None = None) -> dict[str, Any]:
    """The documented defaults of ``name`` for ``dataset`` and ``shift`` (or the generic ones)."""
    return get_method(name).defaults_for(dataset, shift)


__all__: list[str] = ["METHODS", "register_method", "get_method", "method_defaults"]
