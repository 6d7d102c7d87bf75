"""The parts of a model that several methods look up: the weights and biases to train (CoTTA, ROID),
the classifier (LAME's features, regime-aware) and the number of classes (ROID, RoTTA, NOTE)."""
from __future__ import annotations

from torch import nn

from ..errors import InputError


def weight_bias_parameters(model: nn.Module, module_types: tuple[type, ...] = (nn.Module,)
                           ) -> list[tuple[str, nn.Parameter]]:
    """The trainable ``weight``/``bias`` of every module of ``module_types``, in module walk order
    (the order the official ``collect_params`` of CoTTA and ROID walks)."""
    return [(f"{mod_name}.{name}" if mod_name else name, p)
            for mod_name, m in model.named_modules() if isinstance(m, module_types)
            for name, p in m.named_parameters(recurse=False)
            if name in ("weight", "bias") and p.requires_grad]


def classifier_layer(model: nn.Module, method: str = "lame") -> nn.Linear:
    """The model's last ``nn.Linear``: ``linear``/``fc``/``classifier`` of CIFAR ResNet, WRN, ResNeXt, ResNet-50."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise InputError(f"method {method!r} needs a model ending in an nn.Linear classifier (its input is the "
                         "penultimate features, its output size the number of classes); use such a classifier")
    return last


def num_classes(model: nn.Module, method: str, given: int | None = None, *, has_option: bool = False) -> int:
    """``given`` (a method's ``num_classes`` option), or the output size of the model's classifier.

    ``has_option``: the method declares ``num_classes``, so the error tells the user to pass it."""
    if given is not None:
        return given
    try:
        return classifier_layer(model, method).out_features
    except InputError:
        if not has_option:
            raise
        raise InputError(f"method {method!r} cannot find the model's classifier (a final nn.Linear) to count the "
                         "classes of its memory; pass num_classes=") from None
