"""Method registry: a new method is one file plus ``@register_method``."""
from __future__ import annotations

from typing import Any, TypeVar

from ..registry import Registry
from .base import Adapter

METHODS: Registry[type[Adapter]] = Registry("method")

A = TypeVar("A", bound=type[Adapter])


def register_method(cls: A) -> A:
    """Class decorator: make ``cls`` available as ``tta.adapt(model, method=cls.name)``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    METHODS.add(cls.name, cls)
    return cls


def get_method(name: str) -> type[Adapter]:
    return METHODS.get(name)


def method_defaults(name: str, dataset: str | None = None, shift: str | None = None) -> dict[str, Any]:
    """The documented defaults of ``name`` for ``dataset`` and ``shift`` (or the generic ones)."""
    return METHODS.get(name).defaults_for(dataset, shift)


__all__: list[str] = ["METHODS", "register_method", "get_method", "method_defaults"]
