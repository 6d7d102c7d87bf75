"""Recipes: a method is a registered recipe, ``@register_method(...)`` on a build function (``METHODS``).

A recipe is one typed option declaration (``OptionSet``) plus a function that composes the
parts (statistics policy, objective, optimizer, per-method state, teacher, step) into an ``Adapter``.
Resolution happens here, once, for every caller (``tta.adapt``, ``tta run``, the listing):
declared defaults for the context (dataset, shift, whether the model has BatchNorm),
overridden by the user's options, validated; a composed statistics policy's options
(``stats_options``) are resolved by that policy's own declaration in the same context.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..errors import InputError, UnknownNameError
from ..name_registry import Registry
from ._adapter import Adapter
from ._bn_swap import batchnorm_layers
from ._options import Option, OptionSet, When

log = logging.getLogger(__name__)


class Resolved(dict):
    """A method's resolved options (a plain dict of name -> value) plus ``adapter()`` to build with them."""

    def __init__(self, method: str, values: dict[str, Any], channels_last: bool | None = None) -> None:
        super().__init__(values)
        self.method = method
        self.channels_last = channels_last

    def adapter(self, model: nn.Module, **parts: Any) -> Adapter:
        """``Adapter(model, **parts)`` named for the method, recording these options as its hparams."""
        return Adapter(model, name=self.method, hparams=dict(self), channels_last=self.channels_last, **parts)


@dataclass(frozen=True)
class Recipe:
    """A registered method: its description, option declaration and build function."""

    name: str
    summary: str
    paper: str
    options: OptionSet
    build_fn: Callable[[nn.Module, Resolved], Adapter]
    notes: str = ""
    #: the method is a statistics policy registered as a method (``stats`` in its one meaning): it never
    #: builds a graph (listed, and tested under inference_mode)
    stats_only: bool = False
    #: smallest batch with the generic defaults, for the listing
    min_batch_size: int = 1
    #: False for methods that adapt without gradients (e.g. output adjustment): they run under
    #: no_grad and inside torch.inference_mode(), like statistics-only methods
    needs_grad: bool = True

    @property
    def composes_stats(self) -> bool:
        return "stats" in self.options.names

    def resolve(self, given: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """Declared defaults for ``context``, overridden by ``given``, validated (nested stats_options too)."""
        given = dict(given)
        if self.composes_stats:
            _deprecated_norm_alias(self.name, given)
        values = self.options.resolve(given, context)
        if self.composes_stats:
            from ._stats_policy import get_stats  # noqa: PLC0415  (policies register into this module)

            policy = get_stats(values["stats"], self.name)
            values["stats_options"] = policy.options.resolve(dict(values["stats_options"] or {}), context)
        return values

    def defaults(self, dataset: str | None = None, shift: str | None = None,
                 run_batch_size: int | None = None) -> dict[str, Any]:
        return self.resolve({}, {"dataset": dataset, "shift": shift, "run_batch_size": run_batch_size})

    def build(self, model: nn.Module, *, dataset: str | None = None, shift: str | None = None,
              run_seed: int | None = None, run_batch_size: int | None = None, channels_last: bool | None = None,
              **options: Any) -> Adapter:
        context = {"dataset": dataset, "shift": shift, "run_seed": run_seed, "run_batch_size": run_batch_size,
                   "batchnorm": bool(batchnorm_layers(model))}
        values = self.resolve(options, context)
        if self.composes_stats and values["stats"] == "none" and "stats" not in options:
            log.info("%s: model has no BatchNorm; adapting the affine parameters of its norm layers", self.name)
        adapter = self.build_fn(model, Resolved(self.name, values, channels_last))
        if not isinstance(adapter, Adapter):
            raise TypeError(f"recipe {self.name!r} must return an Adapter, got {type(adapter).__name__}")
        return adapter


def _deprecated_norm_alias(method: str, given: dict[str, Any]) -> None:
    """``norm=``/``norm_options=`` on a gradient method meant its statistics policy: now ``stats=``."""
    for old, new in (("norm", "stats"), ("norm_options", "stats_options")):
        if old in given:
            if new in given:
                raise InputError(f"method {method!r}: both {old}= and {new}= given; drop {old}= (renamed to {new}=)")
            msg = (f"method {method!r}: option {old}= is deprecated, use {new}= (the statistics policy; "
                   "'norm' names the backbone's normalization layer)")
            warnings.warn(msg, DeprecationWarning, stacklevel=4)
            log.warning(msg)
            given[new] = given.pop(old)


METHODS: Registry[Recipe] = Registry("method")

#: Methods a user may ask for by name that tta deliberately does not build, and why.
WITHHELD: dict[str, str] = {
    "core": (
        "method 'core' (You, Li & Zhao, arXiv 2110.04065) is not available: its class-correlation loss "
        "could not be verified and tta does not guess it. Use 'alpha-bn' (its statistics part) or "
        "'alpha-bn-mcc' (alpha-bn with the Minimum Class Confusion loss, a different method)"
    ),
}


def register_method(
    name: str,
    *,
    summary: str,
    paper: str = "-",
    options: tuple[Option, ...] = (),
    defaults: tuple[When, ...] = (),
    notes: str = "",
    min_batch_size: int = 1,
    needs_grad: bool = True,
) -> Callable[[Callable[[nn.Module, Resolved], Adapter]], Callable[[nn.Module, Resolved], Adapter]]:
    """Decorator: register ``build(model, opts) -> Adapter`` as method ``name``.

    ``options`` declares every option once (type, range, generic default); ``defaults`` are
    ordered ``When`` rules per dataset / shift / other option. The decorated function is
    returned unchanged. ``needs_grad=False`` declares a method that takes no gradient steps.
    """
    def deco(build: Callable[[nn.Module, Resolved], Adapter]) -> Callable[[nn.Module, Resolved], Adapter]:
        METHODS.add(name, Recipe(name, summary, paper, OptionSet(name, tuple(options), tuple(defaults)), build,
                                 notes, min_batch_size=min_batch_size, needs_grad=needs_grad))
        return build

    return deco


def get_method(name: str) -> Recipe:
    if name in WITHHELD and name not in METHODS:
        raise UnknownNameError(WITHHELD[name])
    return METHODS.get(name)


def method_defaults(name: str, dataset: str | None = None, shift: str | None = None) -> dict[str, Any]:
    """The documented defaults of ``name`` for ``dataset`` and ``shift`` (or the generic ones), fully resolved."""
    return get_method(name).defaults(dataset, shift)


__all__: list[str] = ["METHODS", "Recipe", "Resolved", "register_method", "get_method", "method_defaults"]
