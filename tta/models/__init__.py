"""Backbones: CIFAR ResNets, WRN-28-10, ResNeXt-29, ResNet-50; checkpoint loading."""
from ._checkpoint import load_into, read_state_dict
from ._zoo import MODELS, ModelSpec, build_model, default_model_dir, load_model, resolve_model_name

__all__ = [
    "MODELS",
    "ModelSpec",
    "build_model",
    "default_model_dir",
    "load_into",
    "load_model",
    "read_state_dict",
    "resolve_model_name",
]
