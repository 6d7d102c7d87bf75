"""RoTTA's strong augmentation, applied to a whole batch at once.

This is the transform of BIT-DA/RoTTA ``core/utils/custom_transforms.py::get_tta_transforms``
(CoTTA's, with ``soft=False`` and ``gaussian_std=0.005``). The official pipeline is a
``transforms.Compose`` called once on the stacked memory batch, so every random parameter
is drawn once per call and shared by all images; only the additive noise is per pixel.
In order, on images in [0, 1] of side n (32 for CIFAR, 224 for ImageNet)::

    clip(0, 1)
    colour jitter: 5 ops in torch.randperm(5) order, each factor ~ U(range):
        brightness [0.6, 1.4], contrast [0.7, 1.3], saturation [0.5, 1.5],
        hue [-0.06, 0.06], gamma [0.7, 1.3] (gamma after clamp(1e-8, 1))
    pad n/2 with edge values
    affine: angle ~ U(-15, 15), shifts round(U(-n/8, n/8)) px (1/16 of the padded side),
        scale ~ U(0.9, 1.1), bilinear, fill 0
    gaussian blur, kernel 5, sigma ~ U(0.001, 0.5)
    center crop n
    horizontal flip with probability 0.5
    + N(0, 0.005^2) noise per pixel
    clip(0, 1)

The ops are torchvision's tensor functionals (which take any leading batch shape), and
the random draws are made from ``generator`` in exactly the order the official transforms
make them from torch's global generator, so a run is reproducible from its seed and equal
to the official transform seeded the same way. ``soft=True`` gives CoTTA's milder ranges.
BIT-DA passes the pre-0.13 torchvision arguments ``resample=BILINEAR, fillcolor=None``;
those are ``interpolation=BILINEAR`` with the default fill 0 here.
"""
from __future__ import annotations

import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from ..errors import InputError

_HARD = {
    "brightness": (0.6, 1.4),
    "contrast": (0.7, 1.3),
    "saturation": (0.5, 1.5),
    "hue": (-0.06, 0.06),
    "gamma": (0.7, 1.3),
    "degrees": (-15.0, 15.0),
    "scale": (0.9, 1.1),
    "sigma": (0.001, 0.5),
}
_SOFT = {
    "brightness": (0.8, 1.2),
    "contrast": (0.85, 1.15),
    "saturation": (0.75, 1.25),
    "hue": (-0.03, 0.03),
    "gamma": (0.85, 1.15),
    "degrees": (-8.0, 8.0),
    "scale": (0.95, 1.05),
    "sigma": (0.001, 0.25),
}
TRANSLATE = (1 / 16, 1 / 16)
P_HFLIP = 0.5


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return torch.empty(1).uniform_(lo, hi, generator=generator).item()


def _color_jitter(x: torch.Tensor, r: dict, generator: torch.Generator | None) -> torch.Tensor:
    for op in torch.randperm(5, generator=generator).tolist():
        if op == 0:
            x = TF.adjust_brightness(x, _uniform(*r["brightness"], generator))
        elif op == 1:
            x = TF.adjust_contrast(x, _uniform(*r["contrast"], generator))
        elif op == 2:
            x = TF.adjust_saturation(x, _uniform(*r["saturation"], generator))
        elif op == 3:
            x = TF.adjust_hue(x, _uniform(*r["hue"], generator))
        else:
            gamma = _uniform(*r["gamma"], generator)
            x = TF.adjust_gamma(x.clamp(1e-8, 1.0), gamma)
    return x


def rotta_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    soft: bool = False,
    gaussian_std: float = 0.005,
) -> torch.Tensor:
    """Strongly augment a (B, 3, n, n) batch in [0, 1] with one set of random parameters.

    ``generator`` must live on the CPU (the official draws are CPU draws); the noise is
    drawn there and moved to ``x``'s device.
    """
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise InputError(
            f"RoTTA's augmentation takes square RGB batches (B, 3, n, n), got shape {tuple(x.shape)}"
        )
    if generator is not None and generator.device.type != "cpu":
        raise InputError("rotta_augment draws on the CPU like the official transform; pass a CPU torch.Generator")
    r = _SOFT if soft else _HARD
    n = x.shape[-1]
    x = x.clip(0.0, 1.0)
    x = _color_jitter(x, r, generator)
    x = TF.pad(x, padding=int(n / 2), padding_mode="edge")
    size = x.shape[-1]  # square: width == height
    angle = float(_uniform(*r["degrees"], generator))
    max_d = float(TRANSLATE[0] * size)
    tx = int(round(_uniform(-max_d, max_d, generator)))
    ty = int(round(_uniform(-max_d, max_d, generator)))
    scale = float(_uniform(*r["scale"], generator))
    x = TF.affine(
        x, angle, [tx, ty], scale, [0.0, 0.0], interpolation=InterpolationMode.BILINEAR, fill=[0.0] * x.shape[1]
    )
    sigma = _uniform(*r["sigma"], generator)
    x = TF.gaussian_blur(x, [5, 5], [sigma, sigma])
    x = TF.center_crop(x, [n, n])
    if torch.rand(1, generator=generator) < P_HFLIP:
        x = TF.hflip(x)
    noise = torch.randn(x.shape, generator=generator) * gaussian_std + 0.0  # float32, as official
    x = x + noise.to(device=x.device, dtype=x.dtype)
    return x.clip(0.0, 1.0)
