"""Backbones by name, and ``load_model``."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import CheckpointError
from ..name_registry import Registry
from ..norms import MakeNorm, norm_factory
from ._checkpoint import load_into, read_state_dict
from .resnet_cifar import CifarResNet
from .resnet_imagenet import NormalizedResNet50
from .resnext import CifarResNeXt
from .vit import build_vit
from .wide_resnet import WideResNet

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ModelSpec:
    """How to build a backbone and where its pretrained weights usually live."""

    name: str
    build: Callable[[MakeNorm], nn.Module]
    dataset: str
    num_classes: int
    input_size: int
    description: str
    robustbench_name: str | None = None
    torch_hub_file: str | None = None
    optional_keys: tuple[str, ...] = ()
    aliases: tuple[str, ...] = field(default=())
    default_norm: str = "bn"
    """Norm kind used when none is asked for (transformers take token norms, ``ln``)."""
    train_recipe: dict = field(default_factory=dict)
    """``tta train`` defaults that differ from the CNN recipe (SGD, lr 0.2, weight decay 5e-4)."""


MODELS: Registry[ModelSpec] = Registry("model")


def _add(spec: ModelSpec) -> None:
    MODELS.add(spec.name, spec)


for _depth in (20, 32, 44, 56):
    _add(
        ModelSpec(
            name=f"resnet{_depth}",
            build=(lambda norm, d=_depth: CifarResNet(d, 10, norm)),
            dataset="cifar10",
            num_classes=10,
            input_size=32,
            description=f"CIFAR ResNet-{_depth} (option-A shortcuts); akamaster checkpoints resnet{_depth}.th",
        )
    )
_add(
    ModelSpec(
        name="wrn-28-10",
        build=lambda norm: WideResNet(28, 10, 10, norm),
        dataset="cifar10",
        num_classes=10,
        input_size=32,
        description="WideResNet-28-10, RobustBench cifar10 'Standard' (no input normalization)",
        robustbench_name="Standard",
    )
)
_add(
    ModelSpec(
        name="resnext-29",
        build=lambda norm: CifarResNeXt(29, 4, 32, 100, norm),
        dataset="cifar100",
        num_classes=100,
        input_size=32,
        description="ResNeXt-29 (32x4d) AugMix, RobustBench cifar100 'Hendrycks2020AugMix_ResNeXt'",
        robustbench_name="Hendrycks2020AugMix_ResNeXt",
        optional_keys=("mu", "sigma"),
    )
)
_add(
    ModelSpec(
        name="resnet50",
        build=lambda norm: NormalizedResNet50(1000, norm),
        dataset="imagenet",
        num_classes=1000,
        input_size=224,
        description="torchvision ResNet-50 IMAGENET1K_V1 (RobustBench imagenet 'Standard_R50')",
        robustbench_name="Standard_R50",
        torch_hub_file="resnet50-0676ba61.pth",
    )
)

_VIT_SCHEMES = {
    "vit-cifar": ("pre", "Pre-LN"),
    "vit-cifar-post": ("post", "Post-LN"),
    "vit-cifar-lns": ("lns", "Pre-LN with LayerNorm Scaling 1/sqrt(layer) (Sun et al. 2025)"),
    "vit-cifar-mixln": ("mix-ln", "Mix-LN: first 25% of blocks Post-LN, rest Pre-LN (Li, Yin & Liu 2024)"),
}
for _name, (_scheme, _what) in _VIT_SCHEMES.items():
    _add(
        ModelSpec(
            name=_name,
            build=(lambda norm, s=_scheme: build_vit(norm, s)),
            dataset="cifar10",
            num_classes=10,
            input_size=32,
            description=f"ViT for 32x32 (patch 4, width 192, 6 blocks, 3 heads), {_what}; "
            "token norm from --norm (ln default); no pretrained weights, train with tta train",
            default_norm="ln",
            # the usual ViT recipe (AdamW as in DeiT) instead of the CNN one (SGD, lr 0.2)
            train_recipe={"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05},
        )
    )

_ALIASES = {spec.robustbench_name: spec.name for _, spec in MODELS.items() if spec.robustbench_name}


def resolve_model_name(name: str) -> ModelSpec:
    """Look a backbone up by tta name or by its RobustBench name."""
    return MODELS.get(_ALIASES.get(name, name))


def default_model_dir() -> Path:
    """RobustBench-style model cache: ``$TTA_MODEL_DIR`` or ``~/.cache/tta/models``."""
    env = os.environ.get("TTA_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tta" / "models"


def find_pretrained(spec: ModelSpec, model_dir: str | Path | None = None) -> Path | None:
    """Where a pretrained checkpoint for ``spec`` already sits on disk, if anywhere."""
    candidates: list[Path] = []
    if spec.robustbench_name and spec.torch_hub_file is None:
        root = Path(model_dir).expanduser() if model_dir else default_model_dir()
        candidates.append(root / spec.dataset / "corruptions" / f"{spec.robustbench_name}.pt")
    if spec.torch_hub_file:
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / spec.torch_hub_file)
    return next((c for c in candidates if c.is_file()), None)


def build_model(name: str, norm: MakeNorm | str | None = None, **norm_options) -> nn.Module:
    """Build the architecture ``name`` with random weights (BatchNorm unless ``norm`` is given)."""
    spec = resolve_model_name(name)
    if norm is None and (norm_options or spec.default_norm != "bn"):
        norm = spec.default_norm
    if norm is None:
        factory: MakeNorm = nn.BatchNorm2d
    elif isinstance(norm, str):
        factory = norm_factory(norm, **norm_options)
    else:
        factory = norm
    model = spec.build(factory)
    # a norm kind that also changes the convs (e.g. "bcn": Weight-Standardized convs) converts them here
    finish = getattr(factory, "finish_model", None)
    model = finish(model) if finish is not None else model
    model.input_size = spec.input_size  # tta.validate checks incoming images against it
    return model


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    pretrained: bool = True,
    model_dir: str | Path | None = None,
    download: bool = False,
    norm: str | None = None,
    device: str | torch.device | None = None,
    **norm_options,
) -> nn.Module:
    """Return the backbone ``name`` in eval mode, with weights.

    Weights come from ``checkpoint`` when given; otherwise, with ``pretrained``, from
    the RobustBench cache layout ``<model_dir>/<dataset>/corruptions/<name>.pt`` (or
    torchvision's hub cache for ResNet-50), downloading through RobustBench when
    ``download`` is set. ``pretrained=False`` gives random weights (for training).
    ``device`` ("cpu", "cuda", ...) moves the model there.
    """
    spec = resolve_model_name(name)
    model = build_model(spec.name, norm, **norm_options)
    path: Path | None = Path(checkpoint).expanduser() if checkpoint is not None else None
    if path is None and pretrained:
        path = find_pretrained(spec, model_dir)
        if path is None and download and spec.robustbench_name:
            from ._robustbench import download_checkpoint  # noqa: PLC0415

            path = download_checkpoint(spec, model_dir or default_model_dir())
        if path is None:
            raise CheckpointError(_no_checkpoint_message(spec, model_dir))
    if path is not None:
        load_into(model, read_state_dict(path), path, spec.optional_keys)
        log.info("loaded %s from %s", spec.name, path)
    if device is not None:
        from ..runtime import pick_device  # noqa: PLC0415

        model = model.to(pick_device(str(device)))
    return model.eval()


def _no_checkpoint_message(spec: ModelSpec, model_dir: str | Path | None) -> str:
    if spec.torch_hub_file:
        where = Path(torch.hub.get_dir()) / "checkpoints" / spec.torch_hub_file
        return (
            f"no pretrained weights for {spec.name}: {where} is absent; pass checkpoint=<path> "
            "(torchvision's IMAGENET1K_V1 file) or pretrained=False for random weights"
        )
    if spec.robustbench_name:
        root = Path(model_dir).expanduser() if model_dir else default_model_dir()
        where = root / spec.dataset / "corruptions" / f"{spec.robustbench_name}.pt"
        return (
            f"no pretrained weights for {spec.name}: {where} is absent; place RobustBench's "
            f"'{spec.robustbench_name}' checkpoint there, pass checkpoint=<path>, or use download=True "
            "with the robustbench extra (pip install 'tta-toolkit[robustbench]') and network access"
        )
    if spec.default_norm != "bn":
        return (
            f"no pretrained weights ship for {spec.name}: train one with `tta train --model {spec.name} "
            "--data <train_images.npy> --out <ckpt.pt>` and pass checkpoint=<ckpt.pt>, or pretrained=False"
        )
    return (
        f"no pretrained weights for {spec.name}: pass checkpoint=<path to {spec.name}.th> "
        "(akamaster/pytorch_resnet_cifar10) or pretrained=False for random weights"
    )
