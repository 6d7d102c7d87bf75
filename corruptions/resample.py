"""Resampling that reproduces Pillow BOX resize, OpenCV bilinear and scipy ``map_coordinates``."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

_PIL_BITS = 22  # Pillow's PRECISION_BITS for 8-bit images (32 - 8 - 2)


@lru_cache(maxsize=128)
def pil_box_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) int64 fixed-point weights of Pillow's BOX resampling along one axis.

    Mirrors Pillow's ``precompute_coeffs`` (box support 0.5 scaled by the reduction
    factor, pixel centres at +0.5) and ``normalize_coeffs_8bpc`` (weights rounded to
    22-bit fixed point).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    inv = 1.0 / filterscale
    out = np.zeros((out_size, in_size), dtype=np.int64)
    for xx in range(out_size):  # loop over the output coordinate, computed once per size
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        pos = (np.arange(xmin, xmax) - center + 0.5) * inv
        w = ((pos > -0.5) & (pos <= 0.5)).astype(np.float64)
        if w.sum() != 0:
            w /= w.sum()
        out[xx, xmin:xmax] = (w * (1 << _PIL_BITS) + 0.5).astype(np.int64)
    out.setflags(write=False)
    return out


def pil_box_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``Image.resize((out_w, out_h), Image.BOX)`` on a batch (N,H,W,C) uint8.

    Horizontal pass first with rounding to uint8, then vertical, as Pillow does.
    """
    n, h, w, c = x.shape
    half = 1 << (_PIL_BITS - 1)
    if out_w != w:
        kw = pil_box_weights(w, out_w)
        t = np.einsum("ox,nyxc->nyoc", kw, x.astype(np.int64), optimize=True)
        x = np.clip((t + half) >> _PIL_BITS, 0, 255).astype(np.uint8)
    if out_h != h:
        kh = pil_box_weights(h, out_h)
        t = np.einsum("oy,nyxc->noxc", kh, x.astype(np.int64), optimize=True)
        x = np.clip((t + half) >> _PIL_BITS, 0, 255).astype(np.uint8)
    return x


def cv2_linear_resize(img: np.ndarray, scale: float) -> np.ndarray:
    """``cv2.resize(img, (0, 0), fx=scale, fy=scale)`` (INTER_LINEAR) on one HWC uint8 image.

    Output size ``rint(side * scale)``; source coordinate ``(d + 0.5) / scale - 0.5``
    clamped to the image as OpenCV does. Computed in float and rounded, where OpenCV
    uses 11-bit fixed-point weights: values may differ by one grey level.
    """
    h, w = img.shape[:2]
    oh, ow = int(np.rint(h * scale)), int(np.rint(w * scale))

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        s = np.floor(f).astype(np.int64)
        f = f - s
        low = s < 0
        f[low], s[low] = 0.0, 0
        high = s >= n_in - 1
        f[high], s[high] = 0.0, n_in - 1
        return s, np.minimum(s + 1, n_in - 1), f

    y0, y1, fy = axis(h, oh)
    x0, x1, fx = axis(w, ow)
    im = img.astype(np.float64)
    rows = im[y0] * (1 - fy)[:, None, None] + im[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)


def reflect101(i: np.ndarray, n: int) -> np.ndarray:
    """OpenCV ``borderInterpolate(i, n, BORDER_REFLECT_101)`` for any integer array."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * n - 2
    i = np.abs(i) % period
    return np.where(i >= n, period - i, i)


def _gather(img: np.ndarray, yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
    n, h, w = img.shape[:3]
    flat = img.reshape(n * h * w, *img.shape[3:])
    idx = (np.arange(n).reshape((n,) + (1,) * (yi.ndim - 1)) * h + yi) * w + xi
    return flat[idx]


def bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, border: str) -> np.ndarray:
    """Bilinear sampling of (N,H,W,C) at per-pixel coordinates ys, xs of shape (N,h,w).

    border='reflect101': OpenCV remap/warpAffine with BORDER_REFLECT_101 (each of
    the four taps mapped separately). border='reflect': scipy ``map_coordinates``
    ``order=1, mode='reflect'``: the coordinate is first reflected about the pixel
    edges -0.5 and n-0.5 (half-sample symmetric), then the taps are clamped.
    """
    n, h, w = img.shape[:3]
    if border == "reflect":
        ys = _reflect_coord(ys, h)
        xs = _reflect_coord(xs, w)
    y0 = np.floor(ys)
    x0 = np.floor(xs)
    fy = (ys - y0).astype(img.dtype)[..., None]
    fx = (xs - x0).astype(img.dtype)[..., None]
    y0 = y0.astype(np.int64)
    x0 = x0.astype(np.int64)
    if border == "reflect":
        ya, yb = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
        xa, xb = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
    elif border == "reflect101":
        ya, yb = reflect101(y0, h), reflect101(y0 + 1, h)
        xa, xb = reflect101(x0, w), reflect101(x0 + 1, w)
    else:
        raise ValueError(f"unknown border {border!r}")
    one = np.ones((), dtype=img.dtype)
    top = _gather(img, ya, xa) * (one - fx) + _gather(img, ya, xb) * fx
    bottom = _gather(img, yb, xa) * (one - fx) + _gather(img, yb, xb) * fx
    return top * (one - fy) + bottom * fy


def _reflect_coord(c: np.ndarray, n: int) -> np.ndarray:
    period = 2.0 * n
    t = np.mod(c + 0.5, period)
    t = np.where(t >= n, period - t, t)
    return t - 0.5
