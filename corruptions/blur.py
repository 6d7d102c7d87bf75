"""Blur corruptions: defocus, glass, motion, zoom and gaussian blur."""
from __future__ import annotations

import numpy as np

from .context import Context
from .filters import clipped_zoom_sum, correlate_reflect101, disk_kernel, gaussian
from .motion import motion_blur as _im_motion_blur
from .rng import Draws


def defocus_blur(x: np.ndarray, c: tuple, draws: Draws, ctx: Context) -> np.ndarray:
    """``cv2.filter2D`` (BORDER_REFLECT_101) of x/255 with the anti-aliased disk kernel."""
    kernel = disk_kernel(float(c[0]), float(c[1]))
    out = correlate_reflect101(x / 255.0, kernel.astype(np.float64))
    return np.clip(out, 0, 1) * 255


def gaussian_blur(x: np.ndarray, c: float, draws: Draws, ctx: Context) -> np.ndarray:
    """skimage ``gaussian(x/255, sigma=c)``: mode 'nearest', truncate 4, per channel."""
    return np.clip(gaussian(x / 255.0, c), 0, 1) * 255


def glass_blur(x: np.ndarray, c: tuple, draws: Draws, ctx: Context) -> np.ndarray:
    """Gaussian blur, uint8 truncation, local pixel shuffling, Gaussian blur again.

    The original visits rows ``h = H-d .. d+1`` and columns ``w = W-d .. d+1`` in
    descending order and runs ``x[h,w], x[h',w'] = x[h',w'], x[h,w]`` with
    ``(dx, dy) = randint(-d, d, size=2)``. Because numpy's ``x[h, w]`` is a view,
    that statement copies ``x[h',w']`` into ``x[h,w]`` and leaves ``x[h',w']``
    unchanged: it is not a swap. We keep this published behaviour. A copy reads a
    pixel already overwritten when its source comes later in the visiting order;
    we resolve those chains by pointer jumping, so each pass is one gather.
    """
    sigma, d, iterations = float(c[0]), int(c[1]), int(c[2])
    n, h, w, _ = x.shape
    img = (gaussian(x / 255.0, sigma) * 255).astype(np.uint8)
    rows = np.arange(h - d, d, -1)
    cols = np.arange(w - d, d, -1)
    hh, ww = np.meshgrid(rows, cols, indexing="ij")  # visiting order = raveled order
    pos = (hh * w + ww).ravel()
    npos = len(pos)
    in_region = np.zeros(h * w, dtype=bool)
    in_region[pos] = True
    flat_img = img.reshape(n, h * w, 3)
    for it in range(iterations):
        off = draws.integers(it, -d, d, (npos, 2))  # (N, npos, [dx, dy])
        src = pos[None, :] + off[..., 1] * w + off[..., 0]  # (N, npos)
        # source visited earlier (a larger raveled position inside the region) -> follow it
        follow = in_region[src] & (src > pos[None, :])
        nrow = np.arange(n)[:, None]
        source = np.tile(np.arange(h * w), (n, 1))
        if not follow.any():  # max_delta 1: every source is read before it is overwritten
            source[:, pos] = src
        else:
            nxt = source.copy()
            final = source.copy()
            nxt[:, pos] = np.where(follow, src, pos[None, :])
            final[:, pos] = src
            # pointer jumping over 'follow' links; terminals point to themselves
            while True:
                jumped = np.take_along_axis(nxt, nxt, axis=1)
                if np.array_equal(jumped, nxt):
                    break
                nxt = jumped
            # the value at p is the value the chain's last visited pixel copied from
            source = final[nrow, nxt]
        flat_img = np.take(flat_img.reshape(n * h * w, 3), source + nrow * (h * w), axis=0)
    img = flat_img.reshape(n, h, w, 3)
    return np.clip(gaussian(img / 255.0, sigma), 0, 1) * 255


def motion_blur(x: np.ndarray, c: tuple, draws: Draws, ctx: Context) -> np.ndarray:
    """ImageMagick ``MotionBlurImage(radius, sigma, angle ~ U(-45, 45))``; uint8 out."""
    angles = draws.uniform(0, (), -45.0, 45.0)
    return _im_motion_blur(x, c[0], c[1], angles)


def zoom_blur(x: np.ndarray, c: np.ndarray, draws: Draws, ctx: Context) -> np.ndarray:
    """Mean of the image and its ``clipped_zoom`` by each factor, in float32 as the original."""
    xf = (x / 255.0).astype(np.float32)
    out = clipped_zoom_sum(xf, c, dtype=np.float32)
    res = (xf + out) / np.float32(len(c) + 1)
    return np.clip(res, 0, 1) * np.float32(255)
