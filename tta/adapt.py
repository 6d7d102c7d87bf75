"""``tta.adapt``: wrap any torch model with a test-time adaptation method."""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from .methods import Adapter, get_method


def adapt(model: nn.Module, method: str = "source", *, inplace: bool = False, **options: Any) -> Adapter:
    """Return an ``nn.Module`` whose forward predicts and adapts, with ``.reset()``.

    The model is deep-copied first unless ``inplace`` is set, so the caller's model
    keeps its weights and layers. ``options`` are the method's hyperparameters
    (see ``tta list methods``).
    """
    cls = get_method(method)
    if not isinstance(model, nn.Module):
        raise TypeError(f"adapt() expects a torch.nn.Module, got {type(model).__name__}")
    target = model if inplace else copy.deepcopy(model)
    return cls(target, **options)
