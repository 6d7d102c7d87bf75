"""Module swaps: replace every BatchNorm layer of a model with a method's layer."""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import TTAError

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BN_TYPES)]


def require_batchnorm(model: nn.Module, method: str) -> None:
    if not batchnorm_layers(model):
        raise TTAError(
            f"method {method!r} rewrites BatchNorm statistics but the model has no BatchNorm1d/2d layer; "
            "use method='source', or 'tent' to adapt the affine parameters of other norms"
        )


def replace_batchnorm(model: nn.Module, make: Callable[[nn.Module], nn.Module], method: str) -> int:
    """Replace each BatchNorm1d/2d in ``model`` in place by ``make(bn)``; return how many."""
    require_batchnorm(model, method)
    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, BN_TYPES):
                setattr(parent, child_name, make(child))
                count += 1
    return count
