"""Resampling that reproduces Pillow BOX resize, OpenCV bilinear and scipy ``map_coordinates``."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

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
        kw = pil_box_weights(w, out_w).astype(np.float64)
        # one matrix product over the batch; sums stay exact integers < 2**53
        t = np.tensordot(x.astype(np.float64), kw, axes=([2], [1])).transpose(0, 1, 3, 2)
        x = np.clip(np.floor((t + half) / (1 << _PIL_BITS)), 0, 255).astype(np.uint8)
    if out_h != h:
        kh = pil_box_weights(h, out_h).astype(np.float64)
        t = np.tensordot(x.astype(np.float64), kh, axes=([1], [1])).transpose(0, 3, 1, 2)
        x = np.clip(np.floor((t + half) / (1 << _PIL_BITS)), 0, 255).astype(np.uint8)
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


def bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, border: str) -> np.ndarray:
    """Bilinear sampling of (N,H,W,C) at per-pixel coordinates ys, xs of shape (N,h,w).

    border='reflect101': OpenCV remap/warpAffine with BORDER_REFLECT_101. Mapping
    each tap through reflect-101 equals reflecting the coordinate about pixel
    centres 0 and n-1, which is torch ``grid_sample(align_corners=True,
    padding_mode='reflection')``. border='reflect': scipy ``map_coordinates(order=1,
    mode='reflect')``: the coordinate is reflected about the pixel edges -0.5 and
    n-0.5 and the taps clamped, which is ``grid_sample(align_corners=False,
    padding_mode='reflection')``. Computed in float64, returned in img's dtype.
    """
    n, h, w, c = img.shape
    if border == "reflect101":
        gx = xs * (2.0 / (w - 1)) - 1.0 if w > 1 else np.zeros_like(xs)
        gy = ys * (2.0 / (h - 1)) - 1.0 if h > 1 else np.zeros_like(ys)
        corners = True
    elif border == "reflect":
        gx = (xs + 0.5) * (2.0 / w) - 1.0
        gy = (ys + 0.5) * (2.0 / h) - 1.0
        corners = False
    else:
        raise ValueError(f"unknown border {border!r}")
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2), dtype=np.float64))
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1).astype(np.float64))
    out = torch.nn.functional.grid_sample(t, grid, mode="bilinear", padding_mode="reflection", align_corners=corners)
    return out.permute(0, 2, 3, 1).numpy().astype(img.dtype)
