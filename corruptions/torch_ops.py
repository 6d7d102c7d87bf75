"""Torch implementations of the pixel-wise corruptions, so CUDA tensors stay on their device.

Random draws come from the same counter-based generator as the numpy path (computed
on the CPU, then moved), and the arithmetic is the same float64 sequence, so a
CPU tensor gets the same bytes as the equal numpy array (on CUDA, reductions may
sum in another order: at most one grey level apart where a value sits on an
integer).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .context import Context
from .rng import Draws
from .weather import plasma_fractal


def _on(x: torch.Tensor, a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(x.device)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64) / 255.0


def gaussian_noise(x: torch.Tensor, c: float, draws: Draws, ctx: Context) -> torch.Tensor:
    noise = _on(x, draws.normal(0, tuple(x.shape[1:]), scale=c))
    return torch.clip(_unit(x) + noise, 0, 1) * 255


def speckle_noise(x: torch.Tensor, c: float, draws: Draws, ctx: Context) -> torch.Tensor:
    xf = _unit(x)
    return torch.clip(xf + xf * _on(x, draws.normal(0, tuple(x.shape[1:]), scale=c)), 0, 1) * 255


def impulse_noise(x: torch.Tensor, c: float, draws: Draws, ctx: Context) -> torch.Tensor:
    xf = _unit(x)
    flipped = _on(x, draws.uniform(0, tuple(x.shape[1:])) < c)
    salted = _on(x, draws.uniform(1, tuple(x.shape[1:])) < 0.5)
    xf = torch.where(flipped & salted, 1.0, torch.where(flipped & ~salted, 0.0, xf))
    return torch.clip(xf, 0, 1) * 255


def contrast(x: torch.Tensor, c: float, draws: Draws, ctx: Context) -> torch.Tensor:
    xf = _unit(x)
    means = xf.mean(dim=(1, 2), keepdim=True)
    return torch.clip((xf - means) * c + means, 0, 1) * 255


def _rgb2hsv(rgb: torch.Tensor) -> torch.Tensor:
    """skimage ``rgb2hsv`` arithmetic; skimage assigns the red, green, blue cases in turn,
    so blue wins ties, then green."""
    r, g, b = rgb.unbind(-1)
    v = rgb.amax(-1)
    delta = v - rgb.amin(-1)
    blue, green = b == v, g == v
    num = torch.where(blue, r - g, torch.where(green, b - r, g - b))
    base = torch.where(blue, 4.0, torch.where(green, 2.0, 0.0)).to(rgb.dtype)
    s = torch.where(delta == 0, 0.0, delta / v)
    h = torch.remainder((base + num / delta) / 6.0, 1.0)
    h = torch.where(delta == 0, 0.0, h)
    return torch.stack([h, s, v], -1)


_SECTOR = np.array([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]])


def _hsv2rgb(hsv: torch.Tensor) -> torch.Tensor:
    """skimage ``hsv2rgb``: each channel takes v, t, p or q depending on the hue sector."""
    h, s, v = hsv.unbind(-1)
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = torch.remainder(hi.to(torch.uint8), 6).long()
    cand = torch.stack([v, t, p, q], -1)
    return torch.gather(cand, -1, _on(h, _SECTOR)[sector])


def brightness(x: torch.Tensor, c: float, draws: Draws, ctx: Context) -> torch.Tensor:
    hsv = _rgb2hsv(_unit(x))
    hsv[..., 2] = torch.clip(hsv[..., 2] + c, 0, 1)
    return torch.clip(_hsv2rgb(hsv), 0, 1) * 255


def saturate(x: torch.Tensor, c: tuple, draws: Draws, ctx: Context) -> torch.Tensor:
    hsv = _rgb2hsv(_unit(x))
    hsv[..., 1] = torch.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return torch.clip(_hsv2rgb(hsv), 0, 1) * 255


def fog(x: torch.Tensor, c: tuple, draws: Draws, ctx: Context) -> torch.Tensor:
    n, h, w, _ = x.shape
    mapsize = ctx.preset.fog_mapsize
    while mapsize < max(h, w):
        mapsize *= 2
    xf = _unit(x)
    max_val = xf.amax(dim=(1, 2, 3), keepdim=True)
    xf = xf + c[0] * _on(x, plasma_fractal(draws, mapsize, c[1])[:, :h, :w, None])
    return torch.clip(xf * max_val / (max_val + c[0]), 0, 1) * 255


TORCH_FUNCTIONS: dict[str, Callable[[torch.Tensor, Any, Draws, Context], torch.Tensor]] = {
    f.__name__: f for f in (gaussian_noise, speckle_noise, impulse_noise, contrast, brightness, saturate, fog)
}
