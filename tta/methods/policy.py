"""Statistics policies: adapters that are nothing but a BatchNorm module swap.

A policy class declares its options in ``option_defaults``, builds one layer per
BatchNorm in ``make_layer`` and is usable two ways: as a method of its own
(``tta.adapt(model, method="tbn")``) and as the statistics half of a gradient
method (``tta.adapt(model, method="tent", norm="unmix-tns")``), which calls the
classmethod ``swap``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..errors import InputError, TTAError
from .base import Adapter
from .bn_swap import replace_batchnorm


class StatsAdapter(Adapter):
    """Base class of the normalization-only methods (no gradients, no optimizer)."""

    #: every option the method accepts, with its generic default
    option_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, *, channels_last: bool | None = None, **options: Any) -> None:
        super().__init__(model, channels_last=channels_last)
        self.model.eval()
        self._hparams = self.swap(self.model, **options)
        self.min_batch_size = self.batch_minimum(self._hparams)
        self.snapshot()

    # -- the policy interface ------------------------------------------------
    @classmethod
    def resolve(cls, **options: Any) -> dict[str, Any]:
        """Fill in defaults and reject unknown or invalid options."""
        unknown = sorted(set(options) - set(cls.option_defaults))
        if unknown:
            valid = ", ".join(cls.option_defaults) or "none"
            raise TTAError(f"method {cls.name!r} has no option {', '.join(unknown)}; valid options: {valid}")
        resolved = {**cls.option_defaults, **options}
        cls.validate(resolved)
        return resolved

    @classmethod
    def validate(cls, options: dict[str, Any]) -> None:
        """Raise ``InputError`` for an out-of-range option (override per method)."""

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
    def swap(cls, model: nn.Module, **options: Any) -> dict[str, Any]:
        """Replace every BatchNorm1d/2d of ``model`` in place; return the resolved options."""
        resolved = cls.resolve(**options)
        replace_batchnorm(model, cls.layer_factory(resolved), cls.name)
        return resolved

    # -- the adapter interface -----------------------------------------------
    def adapt_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def hparams(self) -> dict[str, Any]:
        return dict(self._hparams)


def check_range(name: str, value: float, low: float, high: float, method: str) -> None:
    """Raise ``InputError`` unless ``low <= value <= high``."""
    if not isinstance(value, (int, float)) or not low <= value <= high:
        raise InputError(f"method {method!r}: {name} must be in [{low}, {high}], got {value!r}; pass a value in range")
