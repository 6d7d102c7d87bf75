"""``corrupt()``: one corruption at one severity on a batch of uint8 images."""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from tta.errors import InputError, UnknownNameError
from tta.name_registry import Registry

from . import blur, digital, noise, spatter, weather
from .context import Context
from .presets import PRESETS
from .rng import Draws

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS + EXTRA_CORRUPTIONS

CorruptionFn = Callable[[np.ndarray, Any, Draws, Context], np.ndarray]
FUNCTIONS: Registry[CorruptionFn] = Registry("corruption")
for _module in (noise, blur, weather, digital, spatter):
    for _name in ALL_CORRUPTIONS:
        _fn = getattr(_module, _name, None)
        if _fn is not None and _fn.__module__ == _module.__name__:
            FUNCTIONS.add(_name, _fn)

# Bounds the float64 temporaries to a few hundred MB; results do not depend on it.
_PIXELS_PER_CHUNK = 1 << 21

T = TypeVar("T")


def _check(images: Any, name: str, severity: int, preset: str, seed: int) -> None:
    FUNCTIONS.get(name)  # unknown name -> UnknownNameError listing the names
    if preset not in PRESETS:
        raise UnknownNameError(f"unknown corruption preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise InputError(f"severity must be an integer from 1 to 5, got {severity!r}; pass severity=1..5")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}; pass e.g. seed=0")
    dtype = getattr(images, "dtype", None)
    if str(dtype) not in ("uint8", "torch.uint8"):
        raise InputError(
            f"images must be uint8 (0..255), got dtype {dtype}; convert with (x * 255).round().to(torch.uint8) "
            "or np.asarray(x, dtype=np.uint8)"
        )
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise InputError(f"images must have shape (N, H, W, 3) (channels last, RGB), got {shape}; "
                         "add a batch axis or permute NCHW to NHWC")
    size = PRESETS[preset].size
    if shape[1] < size or shape[2] < size:
        raise InputError(
            f"images of {shape[1]}x{shape[2]} are smaller than the '{preset}' preset's {size}x{size}; "
            f"resize them to {size}x{size} or choose the preset that matches their size"
        )


def corrupt(
    images: T,
    name: str,
    severity: int,
    preset: str = "cifar",
    seed: int = 0,
    indices: Sequence[int] | np.ndarray | None = None,
    frost_dir: str | os.PathLike | None = None,
) -> T:
    """Apply corruption ``name`` at ``severity`` (1..5) to (N,H,W,3) uint8 images.

    ``images`` is a numpy array or a uint8 torch tensor; the result has the same
    type, shape and device. ``indices`` are the images' global sample indices
    (default ``arange(N)``): every random draw for image i depends only on
    ``(seed, name, indices[i])`` (the same draws at every severity), so results do not depend on batch size
    or chunking. For tensors, the pixel-wise corruptions (gaussian, speckle and
    impulse noise, contrast, brightness, saturate, fog) run in torch on the tensor's
    device; the others run through numpy on the CPU and are moved back.
    ``frost_dir`` overrides where frost textures are read.
    """
    _check(images, name, severity, preset, seed)
    is_torch = type(images).__module__.startswith("torch")
    n = images.shape[0]
    if indices is None:
        idx = np.arange(n, dtype=np.int64)
    else:
        idx = np.asarray(indices)
        if idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer) or (n and idx.min() < 0):
            raise InputError(f"indices must be {n} non-negative integers (one per image), got shape {idx.shape} "
                             f"dtype {idx.dtype}; pass indices=np.arange(start, start + N)")
    fn = FUNCTIONS.get(name)
    ctx = Context(PRESETS[preset], frost_dir)
    param = ctx.preset.param(name, int(severity))
    name_id = ALL_CORRUPTIONS.index(name)
    if is_torch:
        from .torch_ops import TORCH_FUNCTIONS

        if name in TORCH_FUNCTIONS:
            return _corrupt_torch(images, TORCH_FUNCTIONS[name], param, seed, name_id, idx, ctx)
        device = images.device
        arr = images.detach().cpu().numpy()
    else:
        arr = np.asarray(images)
    out = np.empty_like(arr)
    step = max(1, _PIXELS_PER_CHUNK // (arr.shape[1] * arr.shape[2]))
    for start in range(0, n, step):
        part = np.ascontiguousarray(arr[start : start + step])
        draws = Draws(seed, name_id, idx[start : start + step])
        res = fn(part, param, draws, ctx)
        # np.uint8(float) truncates; the originals store np.uint8(f(x)) with f in [0, 255]
        out[start : start + step] = res if res.dtype == np.uint8 else res.astype(np.uint8)
    if is_torch:
        import torch

        return torch.from_numpy(out).to(device)
    return out


def _corrupt_torch(images: Any, fn: Callable, param: Any, seed: int, name_id: int, idx: np.ndarray, ctx: Context) -> Any:
    """Pixel-wise corruptions on the tensor's own device (same bytes as the numpy path)."""
    import torch

    out = torch.empty_like(images)
    step = max(1, _PIXELS_PER_CHUNK // (images.shape[1] * images.shape[2]))
    for start in range(0, images.shape[0], step):
        draws = Draws(seed, name_id, idx[start : start + step])
        # float -> uint8 in torch truncates toward zero, like np.uint8 on values >= 0
        out[start : start + step] = fn(images[start : start + step], param, draws, ctx).to(torch.uint8)
    return out
