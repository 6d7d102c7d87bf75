"""Weather corruptions: snow, frost and fog."""
from __future__ import annotations

import numpy as np

from tta.errors import InputError

from .context import Context
from .filters import clipped_zoom_sum
from .frost import find_frost_dir, load_textures
from .motion import motion_blur
from .rng import Draws


def snow(x: np.ndarray, c: tuple, draws: Draws, ctx: Context) -> np.ndarray:
    """Gaussian snow layer, clipped zoom, threshold, uint8 truncation, ImageMagick
    motion blur at angle U(-135, -45), added twice (and rotated 180 degrees) to an
    image brightened towards ``1.5 * gray + 0.5`` (cv2 RGB2GRAY weights)."""
    loc, scale, zoom, thresh, mb_radius, mb_sigma, blend = c
    n, h, w, _ = x.shape
    xf = x.astype(np.float32) / np.float32(255)
    layer = draws.normal(0, (h, w), loc=loc, scale=scale)
    layer = clipped_zoom_sum(layer, [zoom])
    layer[layer < thresh] = 0
    layer8 = (np.clip(layer, 0, 1) * 255).astype(np.uint8)
    angles = draws.uniform(1, (), -135.0, -45.0)
    flakes = (motion_blur(layer8, mb_radius, mb_sigma, angles) / 255.0)[..., None]
    gray = (xf[..., 0] * np.float32(0.299) + xf[..., 1] * np.float32(0.587) + xf[..., 2] * np.float32(0.114))[..., None]
    xf = blend * xf + (1 - blend) * np.maximum(xf, gray * 1.5 + 0.5)
    return np.clip(xf + flakes + flakes[:, ::-1, ::-1], 0, 1) * 255


def frost(x: np.ndarray, c: tuple, draws: Draws, ctx: Context) -> np.ndarray:
    """``clip(c0 * x + c1 * crop, 0, 255)`` with a random crop of one of frost1..frost5,
    first resized by the preset's factor (0.2 CIFAR, 0.3 Tiny, 1 ImageNet)."""
    n, h, w, _ = x.shape
    folder = find_frost_dir(ctx.frost_dir)
    textures = load_textures(str(folder), ctx.preset.frost_scale)
    if any(t.shape[0] <= h or t.shape[1] <= w for t in textures):
        raise InputError(
            f"images of {h}x{w} are larger than the '{ctx.preset.name}' frost textures allow; "
            "use a preset whose size matches the images"
        )
    which = draws.integers(0, 0, len(textures), ())
    th = np.array([t.shape[0] for t in textures])[which]
    tw = np.array([t.shape[1] for t in textures])[which]
    # randint(0, th - h) and randint(0, tw - w), as the original
    top = np.floor(draws.uniform(1, ()) * (th - h)).astype(np.int64)
    left = np.floor(draws.uniform(2, ()) * (tw - w)).astype(np.int64)
    big = np.zeros((len(textures), max(t.shape[0] for t in textures), max(t.shape[1] for t in textures), 3), np.uint8)
    for i, t in enumerate(textures):
        big[i, : t.shape[0], : t.shape[1]] = t
    rows = top[:, None] + np.arange(h)
    cols = left[:, None] + np.arange(w)
    crop = big[which[:, None, None], rows[:, :, None], cols[:, None, :]]
    return np.clip(c[0] * x.astype(np.float64) + c[1] * crop, 0, 255)


def plasma_fractal(draws: Draws, mapsize: int, wibbledecay: float, site: int = 0) -> np.ndarray:
    """Diamond-square height map per image, (N, mapsize, mapsize) in [0, 1].

    Same recursion as the original ``plasma_fractal`` (wibble starts at 100 and
    is divided by ``wibbledecay`` per level; each new point gets
    ``mean/4... + wibble * U(-wibble, wibble)``), run on the whole batch.
    """
    n = len(draws)
    sizes = []
    step = mapsize
    while step >= 2:
        k = mapsize // step
        sizes += [k * k, k * k, k * k]
        step //= 2
    u = draws.uniform(site, (sum(sizes),))
    m = np.zeros((n, mapsize, mapsize))
    step, wibble, used = mapsize, 100.0, 0

    def wibbled(arr: np.ndarray) -> np.ndarray:
        nonlocal used
        cnt = arr.shape[1] * arr.shape[2]
        noise = -wibble + 2 * wibble * u[:, used : used + cnt].reshape(arr.shape)
        used += cnt
        return arr / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corner = m[:, 0:mapsize:step, 0:mapsize:step]
        sq = corner + np.roll(corner, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        m[:, half:mapsize:step, half:mapsize:step] = wibbled(sq)
        dr = m[:, half:mapsize:step, half:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = dr + np.roll(dr, 1, axis=1) + (ul + np.roll(ul, -1, axis=2))
        m[:, 0:mapsize:step, half:mapsize:step] = wibbled(lt)
        tt = dr + np.roll(dr, 1, axis=2) + (ul + np.roll(ul, -1, axis=1))
        m[:, half:mapsize:step, 0:mapsize:step] = wibbled(tt)
        step //= 2
        wibble /= wibbledecay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def fog(x: np.ndarray, c: tuple, draws: Draws, ctx: Context) -> np.ndarray:
    """``x + c0 * plasma`` rescaled by ``max / (max + c0)``; the map is cropped to the image."""
    n, h, w, _ = x.shape
    mapsize = ctx.preset.fog_mapsize
    while mapsize < max(h, w):
        mapsize *= 2
    xf = x / 255.0
    max_val = xf.max(axis=(1, 2, 3), keepdims=True)
    xf = xf + c[0] * plasma_fractal(draws, mapsize, c[1])[:, :h, :w, None]
    return np.clip(xf * max_val / (max_val + c[0]), 0, 1) * 255
