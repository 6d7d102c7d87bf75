"""``tta.adapt``: wrap any torch model with a test-time adaptation method."""
from __future__ import annotations

import copy
import logging
from typing import Any

from torch import nn

from .methods import Adapter, get_method
from .methods.regime_aware import unsupported_reason
from .names import DEFAULT_METHOD

log = logging.getLogger(__name__)


def default_method(model: nn.Module) -> str:
    """The method for a caller who names none: ``DEFAULT_METHOD`` (``regime-aware``, safe on i.i.d. and
    label-correlated streams), or ``source`` for a model it cannot run, with a warning that says why and what to
    pass instead, since no method here is proven safe across label regimes on such models."""
    reason = unsupported_reason(model)
    if reason is None:
        return DEFAULT_METHOD
    log.warning("tta.adapt: no method named and %s cannot run (%s); not adapting (method 'source'). Name a "
                "method for this model, e.g. method='eta' (i.i.d. labels) or method='lame' (correlated labels)",
                DEFAULT_METHOD, reason)
    return "source"


def adapt(
    model: nn.Module,
    method: str | None = None,
    *,
    dataset: str | None = None,
    shift: str | None = None,
    run_seed: int | None = None,
    run_batch_size: int | None = None,
    inplace: bool = False,
    channels_last: bool | None = None,
    precision: str = "fp32",
    **options: Any,
) -> Adapter:
    """Return an ``nn.Module`` whose forward predicts and adapts, with ``.reset()``.

    ``method`` None is ``default_method(model)``: ``regime-aware`` (ETA on i.i.d.-looking labels, LAME over
    UnMix-TNS on correlated ones; it returns probabilities), or ``source`` for a model it cannot run.
    ``dataset`` ("cifar10", "cifar100", "imagenet") and ``shift`` ("continual", "mixed", ...)
    select the method's documented defaults, including those of a composed statistics
    policy (``tta list methods``); ``options`` override them. ``tta run`` builds its adapter
    through this same call. ``run_seed`` is the run's seed, for options declared with
    ``from_context="run_seed"``; ``run_batch_size`` the stream's batch size, for defaults that scale with it
    (SAR's and DeYO's ImageNet learning rate). The model is deep-copied first unless ``inplace`` is set.
    ``precision`` "bf16" (CPU or GPU) or "fp16" (GPU) runs each step under autocast (``Adapter.set_precision``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"adapt() expects a torch.nn.Module, got {type(model).__name__}")
    recipe = get_method(default_method(model) if method is None else method)
    target = model if inplace else copy.deepcopy(model)
    adapter = recipe.build(target, dataset=dataset, shift=shift, run_seed=run_seed, run_batch_size=run_batch_size,
                           channels_last=channels_last, **options)
    return adapter.set_precision(precision) if precision != "fp32" else adapter
