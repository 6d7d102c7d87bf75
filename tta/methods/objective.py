"""Gradient methods: a statistics policy plus a loss on the normalization affine parameters.

A gradient method swaps the BatchNorm layers with a statistics policy (``norm``, any
``StatsAdapter`` method name, with ``norm_options``), then takes one optimizer step per
batch on the affine parameters of every normalization layer, minimizing ``loss(logits)``.
The returned logits are those of the forward *before* the step, as in TENT.

Models without BatchNorm (GroupNorm/LayerNorm backbones) are adapted through the
affine parameters of those layers when no ``norm`` is asked for.
"""
from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InputError, TTAError
from .base import Adapter
from .bn_swap import batchnorm_layers
from .policy import StatsAdapter
from .registry import get_method
from .stats import SourceStatsMixin

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
_NORM_NAME = re.compile(r"Norm(\d+d)?$")


def is_norm_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer whose parameters a TTA objective may adapt."""
    torch_norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
    # Custom norms (RMSNorm, PowerNorm2d, ...) are recognized by a class name ending in "Norm" or "NormNd".
    return isinstance(module, (*torch_norms, SourceStatsMixin)) or bool(_NORM_NAME.search(type(module).__name__))


def norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The direct parameters (gamma, beta, ...) of every normalization layer, in module order."""
    return [p for m in model.modules() if is_norm_layer(m) for p in m.parameters(recurse=False)]


class GradientAdapter(Adapter):
    """Base class of methods that optimize normalization affine parameters online."""

    needs_grad = True
    #: statistics policy used when the model has BatchNorm and ``norm`` is not given
    default_norm: ClassVar[str] = "tbn"

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str | None = None,
        norm_options: dict[str, Any] | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        beta: float = 0.9,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        channels_last: bool | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            valid = "norm, norm_options, optimizer, lr, beta, momentum, nesterov, weight_decay"
            raise TTAError(f"method {self.name!r} has no option {', '.join(sorted(unknown))}; valid options: {valid}")
        super().__init__(model, channels_last=channels_last)
        self.model.eval()  # our layers ignore the mode; eval keeps dropout and stochastic depth off
        if optimizer not in OPTIMIZERS:
            raise InputError(f"method {self.name!r}: unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if not lr > 0:
            raise InputError(f"method {self.name!r}: lr must be > 0, got {lr!r}; pass a positive learning rate")
        self.opt_config = {
            "optimizer": optimizer, "lr": float(lr), "beta": float(beta), "momentum": float(momentum),
            "nesterov": bool(nesterov), "weight_decay": float(weight_decay),
        }
        self.norm, self.norm_hparams = self._swap_statistics(norm, dict(norm_options or {}))
        self.model.requires_grad_(False)
        self.params = norm_parameters(self.model)
        if not self.params:
            raise TTAError(
                f"method {self.name!r} adapts normalization affine parameters but the model has none; "
                "use a model with affine BatchNorm/GroupNorm/LayerNorm layers, or method='source'"
            )
        for p in self.params:
            p.requires_grad_(True)
        self.optimizer = self._make_optimizer()
        self.snapshot()

    def _swap_statistics(self, norm: str | None, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if norm is None:
            if not batchnorm_layers(self.model):
                log.info("%s: model has no BatchNorm; adapting the affine parameters of its norm layers", self.name)
                return "none", {}
            norm = self.default_norm
        if norm == "source":  # keep BatchNorm in eval mode with the source statistics
            if options:
                raise InputError(f"norm='source' takes no norm_options, got {sorted(options)}; drop norm_options")
            return "source", {}
        policy = get_method(norm)
        if not issubclass(policy, StatsAdapter):
            raise InputError(
                f"norm={norm!r} is not a statistics method; use one of: source, "
                + ", ".join(sorted(n for n, c in _policies()))
            )
        hparams = policy.swap(self.model, **options)
        self.min_batch_size = max(self.min_batch_size, policy.batch_minimum(hparams))
        self.min_batch_reason = policy.min_batch_reason
        return norm, hparams

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.opt_config
        if c["optimizer"] == "adam":
            return torch.optim.Adam(self.params, lr=c["lr"], betas=(c["beta"], 0.999), weight_decay=c["weight_decay"])
        return torch.optim.SGD(self.params, lr=c["lr"], momentum=c["momentum"], nesterov=c["nesterov"],
                               weight_decay=c["weight_decay"])

    def reset_extra(self) -> None:
        self.optimizer = self._make_optimizer()  # fresh moments: the exact initial state

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """The unsupervised objective minimized on each batch."""
        raise NotImplementedError

    def adapt_forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_inference_mode_enabled():
            raise TTAError(
                f"method {self.name!r} takes gradient steps but runs under torch.inference_mode(); "
                "call it outside inference_mode, or use a normalization-only method"
            )
        with torch.enable_grad():
            logits = self.model(x)
            loss = self.loss(logits)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return logits.detach()

    def hparams(self) -> dict[str, Any]:
        out: dict[str, Any] = {"norm": self.norm, "norm_options": dict(self.norm_hparams)}
        c = self.opt_config
        out.update(optimizer=c["optimizer"], lr=c["lr"], weight_decay=c["weight_decay"])
        if c["optimizer"] == "adam":
            out["beta"] = c["beta"]
        else:
            out.update(momentum=c["momentum"], nesterov=c["nesterov"])
        return out


def _policies() -> list[tuple[str, type]]:
    from .registry import METHODS  # noqa: PLC0415

    return [(n, c) for n, c in METHODS.items() if issubclass(c, StatsAdapter)]
