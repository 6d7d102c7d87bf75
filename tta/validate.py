"""Checks that a batch fits the model it is fed to: value range, channels, spatial size.

A wrong pixel range or image size does not crash a CNN; it silently gives a wrong
error rate (``model(x * 255)`` scores about 9 % on CIFAR-10). These checks run on
the batch already in memory, so they cost one min/max per batch.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from .errors import InputError

log = logging.getLogger(__name__)

#: floats this far outside [0, 1] are rounding noise, not a wrong scale
RANGE_TOLERANCE = 1e-3


def expected_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first convolution (None when it has none)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


def expected_size(model: nn.Module) -> tuple[int | None, bool]:
    """(image side the model was built for, whether another side would break it).

    Transformers with learned position embeddings (``image_size``) need their own
    size; CNNs pool globally and accept any size, so for them a different size
    only earns a warning. ``input_size`` is set by ``tta.build_model``.
    """
    side = getattr(model, "image_size", None)
    if isinstance(side, int):
        return side, True
    side = getattr(model, "input_size", None)
    return (side if isinstance(side, int) else None), False


def check_images(x: torch.Tensor, model: nn.Module) -> None:
    """Raise ``InputError`` for a float batch outside [0, 1] or with channels/size the model cannot take."""
    if x.dtype == torch.float64:
        raise InputError("expected float32 images, got float64; convert with x.float()")
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        lo, hi = float(lo), float(hi)
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            hint = "divide by 255" if hi > 1.5 and lo >= -RANGE_TOLERANCE else "undo the normalization"
            raise InputError(
                f"images must be floats in [0, 1] (the model normalizes them itself), got values in "
                f"[{lo:.3g}, {hi:.3g}]; {hint}"
            )
    channels = expected_channels(model)
    if channels is not None and x.shape[1] != channels:
        layout = " (is it NHWC? use x.permute(0, 3, 1, 2))" if x.shape[-1] == channels else ""
        raise InputError(
            f"the model takes {channels}-channel images, got {x.shape[1]} channels in a batch of shape "
            f"{tuple(x.shape)}{layout}; pass (B, {channels}, H, W) images"
        )
    side, strict = expected_size(model)
    if side is not None and tuple(x.shape[-2:]) != (side, side):
        msg = f"the model was built for {side}x{side} images, got {x.shape[-2]}x{x.shape[-1]}"
        if strict:
            raise InputError(f"{msg}; resize the images to {side}x{side}")
        if not getattr(model, "_tta_size_warned", False):
            model._tta_size_warned = True  # once per model, not once per batch
            log.warning("%s; its error rates are not comparable to published ones", msg)


def check_dataset_size(image_side: tuple[int, int], model: nn.Module, what: str) -> None:
    """Fail before a run when the dataset's images differ in size from what the model was built for."""
    side, _ = expected_size(model)
    if side is not None and tuple(image_side) != (side, side):
        raise InputError(
            f"{what} holds {image_side[0]}x{image_side[1]} images but the model was built for {side}x{side}; "
            "pass a dataset of that size or a model built for it (tta list models)"
        )
