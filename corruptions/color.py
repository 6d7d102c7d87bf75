"""HSV conversions with scikit-image's ``rgb2hsv`` / ``hsv2rgb`` arithmetic, batched."""
from __future__ import annotations

import numpy as np


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """(…,3) float in [0,1] -> HSV; ties in the max channel resolve like skimage (blue, then green)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = np.ptp(rgb, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = delta / v
        h = np.where(r == v, (g - b) / delta, 0.0)
        h = np.where(g == v, 2.0 + (b - r) / delta, h)
        h = np.where(b == v, 4.0 + (r - g) / delta, h)
    s[delta == 0.0] = 0.0
    h = (h / 6.0) % 1.0
    h[delta == 0.0] = 0.0
    return np.stack([h, s, v], axis=-1)


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = hi.astype(np.uint8) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.empty(hsv.shape, dtype=np.float64)
    for ch in range(3):
        out[..., ch] = np.choose(hi, [c[ch] for c in choices])
    return out
