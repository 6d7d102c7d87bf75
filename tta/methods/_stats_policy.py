"""Statistics policies: which layer replaces each BatchNorm (``stats=`` of a method).

A policy class declares its options once (``options``, an ``OptionSet``) and builds one
layer per BatchNorm in ``make_layer``. ``@register_stats`` makes it usable two ways: as a
statistics-only method of the same name (``tta.adapt(model, "tbn")``) and as the
statistics part of any method with a ``stats`` option
(``tta.adapt(model, "tent", stats="unmix-tns", stats_options={"K": 16})``).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, ContextManager

from torch import nn

from ..errors import InputError
from ..name_registry import Registry
from ._adapter import Adapter
from ._bn_swap import replace_batchnorm
from ._options import OptionSet
from ._recipe import METHODS, Recipe, Resolved


class StatsPolicy:
    """Base class of statistics policies; subclasses set the class attributes and ``make_layer``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = "-"
    notes: ClassVar[str] = ""
    options: ClassVar[OptionSet] = OptionSet("")
    #: smallest batch the policy adapts on with its generic defaults (see ``batch_minimum``)
    min_batch_size: ClassVar[int] = 1
    #: why smaller batches cannot be adapted on, for the error message
    min_batch_reason: ClassVar[str] = ""
    #: False for policies that keep the model's layers (source, none)
    swaps_batchnorm: ClassVar[bool] = True

    @classmethod
    def batch_minimum(cls, options: dict[str, Any]) -> int:
        """The smallest batch this policy adapts on with ``options``."""
        return cls.min_batch_size

    @classmethod
    def make_layer(cls, bn: nn.Module, **options: Any) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def layer_factory(cls, options: dict[str, Any]) -> Callable[[nn.Module], nn.Module]:
        """The callable that turns one BatchNorm into this policy's layer."""
        return lambda bn: cls.make_layer(bn, **options)

    @classmethod
    def swap(cls, model: nn.Module, options: dict[str, Any]) -> None:
        """Replace every BatchNorm1d/2d of ``model`` in place (``options`` already resolved)."""
        model.eval()  # the swapped layers ignore the mode; eval keeps dropout and stochastic depth off
        if cls.swaps_batchnorm:
            replace_batchnorm(model, cls.layer_factory(options), cls.name)

    @classmethod
    def configure(cls, model: nn.Module, options: dict[str, Any]) -> Callable[[Adapter, Any], Any] | None:
        """Prepare the swapped model for the statistics-only method; return its step, or None for
        the plain one-forward step. Not called when the policy is the ``stats`` part of another method."""
        return None

    @classmethod
    def batch_context(cls, model: nn.Module, x: Any, **batch_info: Any) -> ContextManager[None] | None:
        """Hand per-batch keyword arguments of ``forward`` to the layers; None: the policy takes none."""
        return None

    @classmethod
    def has_batch_context(cls) -> bool:
        return cls.batch_context.__func__ is not StatsPolicy.batch_context.__func__


STATS: Registry[type[StatsPolicy]] = Registry("statistics policy")


def get_stats(name: str, method: str = "") -> type[StatsPolicy]:
    """The policy called ``name``; InputError listing the policies otherwise."""
    if name not in STATS:
        who = f"method {method!r}: " if method else ""
        raise InputError(f"{who}stats={name!r} is not a statistics policy; use one of: {', '.join(STATS)}")
    return STATS.get(name)


def stats_adapter(policy: type[StatsPolicy], model: nn.Module, opts: Resolved) -> Adapter:
    """The statistics-only method of ``policy``: swap, then adapt by forwarding (no graph)."""
    policy.swap(model, opts)
    return opts.adapter(
        model, step=policy.configure(model, opts), min_batch_size=policy.batch_minimum(opts), min_batch_reason=policy.min_batch_reason,
        batch_context=policy.batch_context if policy.has_batch_context() else None,
    )


def register_stats(cls: type[StatsPolicy]) -> type[StatsPolicy]:
    """Class decorator: register a policy for ``stats=`` and as the statistics-only method ``cls.name``."""
    if not cls.name or cls.options.owner != cls.name:
        raise ValueError(f"{cls.__name__} needs a name and options = OptionSet({cls.name!r}, ...)")
    STATS.add(cls.name, cls)
    if cls.name != "none":
        METHODS.add(cls.name, Recipe(cls.name, cls.summary, cls.paper, cls.options,
                                     lambda model, opts: stats_adapter(cls, model, opts), cls.notes,
                                     stats_only=True, min_batch_size=cls.min_batch_size,
                                     needs_grad=False))
    return cls


__all__ = ["STATS", "StatsPolicy", "get_stats", "register_stats", "stats_adapter"]
