"""Parameter selection shared by methods whose official code walks the modules for weights and biases."""
from __future__ import annotations

from torch import nn


def weight_bias_parameters(model: nn.Module, module_types: tuple[type, ...] = (nn.Module,)
                           ) -> list[tuple[str, nn.Parameter]]:
    """The trainable ``weight``/``bias`` of every module of ``module_types``, in module walk order
    (the order the official ``collect_params`` of CoTTA and ROID walks)."""
    return [(f"{mod_name}.{name}" if mod_name else name, p)
            for mod_name, m in model.named_modules() if isinstance(m, module_types)
            for name, p in m.named_parameters(recurse=False)
            if name in ("weight", "bias") and p.requires_grad]
