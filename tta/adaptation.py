"""``tta.adapt``: wrap any torch model with a test-time adaptation method."""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from .methods import Adapter, get_method


def adapt(
    model: nn.Module,
    method: str = "source",
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

    ``dataset`` ("cifar10", "cifar100", "imagenet") and ``shift`` ("continual", "mixed", ...)
    select the method's documented defaults, including those of a composed statistics
    policy (``tta list methods``); ``options`` override them. ``tta run`` builds its adapter
    through this same call. ``run_seed`` is the run's seed, for options declared with
    ``from_context="run_seed"``; ``run_batch_size`` the stream's batch size, for defaults that scale with it
    (SAR's and DeYO's ImageNet learning rate). The model is deep-copied first unless ``inplace`` is set.
    ``precision`` "bf16" (CPU or GPU) or "fp16" (GPU) runs each step under autocast (``Adapter.set_precision``).
    """
    recipe = get_method(method)
    if not isinstance(model, nn.Module):
        raise TypeError(f"adapt() expects a torch.nn.Module, got {type(model).__name__}")
    target = model if inplace else copy.deepcopy(model)
    adapter = recipe.build(target, dataset=dataset, shift=shift, run_seed=run_seed, run_batch_size=run_batch_size,
                           channels_last=channels_last, **options)
    return adapter.set_precision(precision) if precision != "fp32" else adapter
