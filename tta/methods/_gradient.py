"""Parts of gradient methods: parameter selection, optimizer options, and the composition helper.

A gradient method swaps the BatchNorm layers with a statistics policy (``stats``, any
registered policy, with ``stats_options``), selects the parameters it adapts (by default
the affine parameters of every normalization layer) and takes optimizer steps on an
objective. ``gradient_adapter`` composes those parts for a recipe; the objective and
the method's own state (``memory``), teacher and step hook are the recipe's.

Models without BatchNorm (GroupNorm/LayerNorm backbones) get ``stats="none"`` by
default (``NO_BATCHNORM``): the affine parameters of their own norm layers are adapted.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import torch
from torch import nn

from ..errors import TTAError
from ._adapter import Adapter, StepFn
from ._moments import SourceStatsMixin
from ._options import Option, When, when
from ._recipe import Resolved
from ._stats_policy import get_stats

_NORM_NAME = re.compile(r"Norm(\d+d)?$")
INF = float("inf")


def is_norm_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer whose parameters a TTA objective may adapt."""
    torch_norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
    # Custom norms (RMSNorm, PowerNorm2d, ...) are recognized by a class name ending in "Norm" or "NormNd".
    return isinstance(module, (*torch_norms, SourceStatsMixin)) or bool(_NORM_NAME.search(type(module).__name__))


def norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The direct parameters (gamma, beta, ...) of every normalization layer, in module order."""
    return [p for m in model.modules() if is_norm_layer(m) for p in m.parameters(recurse=False)]


def stats_options(default: str = "tbn", choices: tuple[str, ...] | None = None) -> tuple[Option, ...]:
    """The ``stats`` and ``stats_options`` options of a method composed with a statistics policy."""
    return (
        Option("stats", str, default, "statistics policy replacing BatchNorm: a statistics-only method, or none",
               choices=choices),
        Option("stats_options", dict, {}, "options of the statistics policy (its own defaults apply)"),
    )


def optimizer_options(optimizer: str = "adam", lr: float = 1e-3) -> tuple[Option, ...]:
    """Optimizer options: Adam (beta, 0.999) or SGD (momentum, nesterov), learning rate, weight decay."""
    return (
        Option("optimizer", str, optimizer, choices=("adam", "sgd")),
        Option("lr", float, lr, "learning rate", low=0, open_low=True),
        Option("beta", float, 0.9, "Adam beta1", low=0, high=1, open_high=True),
        Option("momentum", float, 0.9, "SGD momentum", low=0, high=1, open_high=True),
        Option("nesterov", bool, False, "SGD Nesterov momentum"),
        Option("weight_decay", float, 0.0, low=0),
    )


#: Models without BatchNorm keep their norm layers and adapt those layers' affine parameters.
NO_BATCHNORM = when(batchnorm=False)(stats="none")

#: The UnMix-TNS protocol's optimizer when a gradient method runs over UnMix-TNS: its scripts pass
#: OPTIM.LR globally (devavratTomar/unmixtns run.sh): Adam 1e-5 on CIFAR, SGD Nesterov 2.5e-6 on ImageNet.
UNMIX_PROTOCOL: tuple[When, ...] = (
    when("UnMix-TNS protocol", stats="unmix-tns", dataset=("cifar10", "cifar100"))(optimizer="adam", lr=1e-5),
    when("UnMix-TNS protocol", stats="unmix-tns", dataset="imagenet")(
        optimizer="sgd", lr=2.5e-6, momentum=0.9, nesterov=True),
)


def make_optimizer(params: list[nn.Parameter], opts: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer ``opts`` (see ``optimizer_options``) asks for, over ``params``."""
    if opts["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=opts["lr"], betas=(opts["beta"], 0.999), weight_decay=opts["weight_decay"])
    return torch.optim.SGD(params, lr=opts["lr"], momentum=opts["momentum"], nesterov=opts["nesterov"],
                           weight_decay=opts["weight_decay"])


def gradient_adapter(
    model: nn.Module,
    opts: Resolved,
    objective: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]] | None,
    *,
    params: Callable[[nn.Module], list[nn.Parameter]] = norm_parameters,
    step: StepFn | None = None,
    memory: nn.Module | Callable[[nn.Module], nn.Module] | None = None,
    teacher: Callable[[nn.Module], nn.Module] | None = None,
    seed: int | None = None,
    min_batch_size: int = 1,
    min_batch_reason: str = "",
    optimizer: Callable[[list[nn.Parameter], Resolved], torch.optim.Optimizer] | None = None,
) -> Adapter:
    """Compose a gradient method: swap statistics (``opts["stats"]``), select ``params(model)``,
    build the optimizer from ``opts``, and wrap it all in an ``Adapter``.

    ``objective(student)`` returns the loss on the logits; it is called after the swap, so an
    objective module can hold references to (or buffers from) the swapped layers.
    ``teacher`` is called with the swapped student (e.g. ``copy.deepcopy``) so that the
    teacher starts from the student's exact layers. Only the selected parameters require grad.
    ``memory`` (the method's own state) may likewise be a callable of the swapped student (state that copies it, e.g.
    source weights or an anchor model). ``optimizer(params, opts)`` replaces the optimizer
    that ``optimizer_options`` describe (e.g. SAM); ``min_batch_size``/``min_batch_reason``
    add the method's own batch minimum to the policy's.
    """
    policy = get_stats(opts["stats"], opts.method)
    policy.swap(model, opts["stats_options"])
    model.requires_grad_(False)
    selected = params(model)
    if not selected:
        raise TTAError(
            f"method {opts.method!r} adapts normalization affine parameters but the model has none; "
            "use a model with affine BatchNorm/GroupNorm/LayerNorm layers, or method='source'"
        )
    for p in selected:
        p.requires_grad_(True)
    policy_minimum = policy.batch_minimum(opts["stats_options"])
    return opts.adapter(
        model, objective=None if objective is None else objective(model),
        optimizer=(optimizer or make_optimizer)(selected, opts), step=step,
        memory=memory if memory is None or isinstance(memory, nn.Module) else memory(model),
        teacher=None if teacher is None else teacher(model), seed=seed,
        min_batch_size=max(min_batch_size, policy_minimum),
        min_batch_reason=(min_batch_reason if min_batch_reason and min_batch_size >= policy_minimum
                          else policy.min_batch_reason),
        batch_context=policy.batch_context if policy.has_batch_context() else None,
    )


__all__ = ["NO_BATCHNORM", "UNMIX_PROTOCOL", "gradient_adapter", "is_norm_layer", "make_optimizer",
           "norm_parameters", "optimizer_options", "stats_options"]
