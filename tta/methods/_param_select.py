"""Model configuration and parameter selection shared by methods whose official code walks the modules
(CoTTA and ROID): BatchNorm on batch statistics, and the weights and biases to train."""
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


def use_batch_statistics(model: nn.Module) -> nn.Module:
    """In place: eval mode, except that BatchNorm2d normalizes with batch statistics (no running
    statistics, as the references' ``configure_model``) and BatchNorm1d runs in train mode."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
        elif isinstance(m, nn.BatchNorm1d):
            m.train()
    return model
