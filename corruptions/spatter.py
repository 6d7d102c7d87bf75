"""Spatter (water drops or mud), one of the four extra corruptions.

The water branch of the original chains OpenCV calls; each is reimplemented for
a batch: ``Canny(50, 150)`` (3x3 Sobel with replicated border, L1 magnitude,
OpenCV's tan(22.5 deg) sector test, hysteresis as 8-connected components),
``distanceTransform(DIST_L2, 5)`` (Borgefors 5x5 chamfer, a=1, b=1.4, c=2.1969,
as OpenCV documents), ``threshold(TRUNC, 20)``, ``blur(3x3)``
(BORDER_REFLECT_101), ``equalizeHist`` and ``filter2D`` to uint8.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .context import Context
from .filters import gaussian
from .rng import Draws

_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
_CHAMFER = ((1, 0, 1.0), (1, 1, 1.4), (2, 1, 2.1969))


def _pad(a: np.ndarray, r: int, mode: str, value: float = 0) -> np.ndarray:
    widths = ((0, 0), (r, r), (r, r))
    return np.pad(a, widths, mode=mode, constant_values=value) if mode == "constant" else np.pad(a, widths, mode=mode)


def _correlate3(a: np.ndarray, k: np.ndarray, mode: str) -> np.ndarray:
    """3x3 correlation of (N,H,W) with per-tap shifts; mode is np.pad's."""
    n, h, w = a.shape
    p = _pad(a, 1, mode)
    out = np.zeros(a.shape, dtype=np.result_type(a, k))
    for i in range(3):
        for j in range(3):
            if k[i, j]:
                out += k[i, j] * p[:, i : i + h, j : j + w]
    return out


def canny(img: np.ndarray, low: int = 50, high: int = 150) -> np.ndarray:
    """OpenCV ``Canny(img, low, high)`` (aperture 3, L1 gradient) on (N,H,W) uint8 -> bool edges."""
    a = img.astype(np.int64)
    sob = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    dx = _correlate3(a, sob, "edge")
    dy = _correlate3(a, sob.T, "edge")
    mag = np.abs(dx) + np.abs(dy)
    n, h, w = mag.shape
    mp = _pad(mag, 1, "constant", 0)

    def at(oy: int | np.ndarray, ox: int | np.ndarray) -> np.ndarray:
        if np.isscalar(oy) and np.isscalar(ox):
            return mp[:, 1 + oy : 1 + oy + h, 1 + ox : 1 + ox + w]
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        return mp[np.arange(n)[:, None, None], 1 + yy + oy, 1 + xx + ox]

    x = np.abs(dx)
    y = np.abs(dy) << 15
    tg22x = x * _TG22
    tg67x = tg22x + (x << 16)
    s = np.where((dx ^ dy) < 0, -1, 1)
    horiz = (mag > at(0, -1)) & (mag >= at(0, 1))
    vert = (mag > at(-1, 0)) & (mag >= at(1, 0))
    diag = (mag > at(-1, -s)) & (mag > at(1, s))
    keep = np.where(y < tg22x, horiz, np.where(y > tg67x, vert, diag)) & (mag > low)
    strong = keep & (mag > high)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected inside each image, never across images
    labels, count = ndimage.label(keep, structure=structure)
    good = np.zeros(count + 1, dtype=bool)
    good[np.unique(labels[strong])] = True
    good[0] = False
    return good[labels]


def chamfer_distance(edges: np.ndarray, cap: float) -> np.ndarray:
    """OpenCV ``distanceTransform(DIST_L2, 5)`` to the nearest edge pixel, exact up to ``cap``."""
    n, h, w = edges.shape
    big = np.float32(cap + 10)
    d = np.where(edges, np.float32(0), big).astype(np.float32)
    offsets = []
    for ox, oy, cost in _CHAMFER:
        for sx, sy in {(ox, oy), (oy, ox)}:
            for gx in (1, -1):
                for gy in (1, -1):
                    offsets.append((gx * sx, gy * sy, np.float32(cost)))
    offsets = sorted(set(offsets))
    r = 2
    for _ in range(int(np.ceil(cap)) + 1):  # a path cheaper than cap has at most cap steps
        p = _pad(d, r, "constant", big)
        new = d.copy()
        for ox, oy, cost in offsets:
            np.minimum(new, p[:, r + oy : r + oy + h, r + ox : r + ox + w] + cost, out=new)
        if np.array_equal(new, d):
            break
        d = new
    return d


def _box3(a: np.ndarray) -> np.ndarray:
    """``cv2.blur(a, (3, 3))`` sums (BORDER_REFLECT_101); caller divides."""
    return _correlate3(a, np.ones((3, 3), dtype=a.dtype), "reflect")


def equalize_hist(img: np.ndarray) -> np.ndarray:
    """OpenCV ``equalizeHist`` per image of (N,H,W) uint8."""
    n = img.shape[0]
    flat = img.reshape(n, -1).astype(np.int64)
    total = flat.shape[1]
    hist = np.bincount((flat + 256 * np.arange(n)[:, None]).ravel(), minlength=256 * n).reshape(n, 256)
    first = np.argmax(hist > 0, axis=1)
    first_count = hist[np.arange(n), first]
    csum = np.cumsum(hist, axis=1) - first_count[:, None]  # sum over (first, i]
    with np.errstate(divide="ignore"):
        scale = np.float32(255.0) / (total - first_count).astype(np.float32)
    lut = np.rint(csum.astype(np.float32) * scale[:, None]).clip(0, 255)
    lut[np.arange(256)[None, :] <= first[:, None]] = 0
    out = np.take_along_axis(lut, flat, axis=1).astype(np.uint8).reshape(img.shape)
    flat_img = first_count == total
    out[flat_img] = img[flat_img]
    return out


def spatter(x: np.ndarray, c: tuple, draws: Draws, ctx: Context) -> np.ndarray:
    """Water drops (c5 = 0, pale turquoise, edge-shaded) or mud (c5 = 1, brown)."""
    loc, scale, sigma, thresh, intensity, mode = c
    n, h, w, _ = x.shape
    xf = x.astype(np.float32) / np.float32(255)
    liquid = gaussian(draws.normal(0, (h, w), loc=loc, scale=scale), sigma)
    liquid[liquid < thresh] = 0
    if mode == 0:
        liquid8 = (liquid * 255).astype(np.uint8)
        dist = chamfer_distance(canny(liquid8, 50, 150), 20.0)
        dist = np.minimum(dist, np.float32(20))
        dist = (_box3(dist) / np.float32(9)).astype(np.uint8)
        dist = equalize_hist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = _correlate3(dist.astype(np.int64), ker, "reflect").clip(0, 255)
        dist = np.rint(_box3(dist) / 9.0).astype(np.float32)
        m = liquid8 * dist
        peak = m.max(axis=(1, 2), keepdims=True)
        m = np.where(peak > 0, m / np.where(peak > 0, peak, 1), 0) * np.float32(intensity)
        color = np.array([175 / 255.0, 238 / 255.0, 238 / 255.0])
        return np.clip(xf + m[..., None] * color, 0, 1) * 255
    m = gaussian(np.where(liquid > thresh, 1, 0).astype(np.float32), intensity)
    m[m < 0.8] = 0
    color = np.array([63 / 255.0, 42 / 255.0, 20 / 255.0]) * m[..., None]
    xf = xf * (1 - m[..., None])
    return np.clip(xf + color, 0, 1) * 255
