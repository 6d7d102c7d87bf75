"""HSV conversions with scikit-image's ``rgb2hsv`` / ``hsv2rgb`` arithmetic, batched."""
from __future__ import annotations

import numpy as np


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """(…,3) float in [0,1] -> HSV; ties in the max channel resolve like skimage (blue, then green)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = np.ptp(rgb, axis=-1)
    blue, green = b == v, g == v
    # skimage assigns the red, green, blue cases in turn, so blue wins ties, then green
    num = np.where(blue, r - g, np.where(green, b - r, g - b))
    base = np.where(blue, 4.0, np.where(green, 2.0, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        s = delta / v
        h = base + num / delta
    s[delta == 0.0] = 0.0
    h = (h / 6.0) % 1.0
    h[delta == 0.0] = 0.0
    return np.stack([h, s, v], axis=-1)


# hsv2rgb: which of (v, t, p, q) each RGB channel takes in each of the six hue sectors
_SECTOR = np.array([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]])


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = hi.astype(np.uint8) % 6
    cand = np.stack([v, t, p, q], axis=-1)
    return np.take_along_axis(cand, _SECTOR[sector], axis=-1)
