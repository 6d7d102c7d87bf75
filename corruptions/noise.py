"""Noise corruptions: gaussian, shot (Poisson), impulse (salt & pepper), speckle.

Each returns float64 in [0, 255]; the caller truncates to uint8 like ``np.uint8``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats

from .context import Context
from .rng import Draws


def gaussian_noise(x: np.ndarray, c: float, draws: Draws, ctx: Context) -> np.ndarray:
    """``clip(x/255 + N(0, c), 0, 1) * 255``."""
    xf = x / 255.0
    return np.clip(xf + draws.normal(0, x.shape[1:], scale=c), 0, 1) * 255


_GUIDE = 256  # buckets of the inversion guide table


@lru_cache(maxsize=32)
def _poisson_tables(c: float) -> tuple[np.ndarray, np.ndarray, int]:
    """CDF of Poisson(v/255 * c) for every grey level v (flattened rows) and a guide table.

    ``guide[v, j]`` is the smallest k with ``cdf[v, k] >= j / _GUIDE``: a search for u
    can start there, since the answer is never below it.
    """
    lam = np.arange(256) / 255.0 * c
    kmax = int(np.ceil(c + 12 * np.sqrt(c) + 30))
    cdf = stats.poisson.cdf(np.arange(kmax)[None, :], lam[:, None])
    cdf[:, -1] = 1.0
    levels = np.arange(_GUIDE) / _GUIDE
    guide = np.stack([np.searchsorted(row, levels, side="left") for row in cdf])  # 256 rows, once per c
    return cdf.ravel(), guide.ravel(), kmax


def shot_noise(x: np.ndarray, c: float, draws: Draws, ctx: Context) -> np.ndarray:
    """``clip(Poisson(x/255 * c) / c, 0, 1) * 255``.

    The Poisson draw inverts the exact CDF of ``Poisson(v/255 * c)`` for each value's
    grey level v: start from a guide table, then step up while ``cdf[k] < u``.
    """
    cdf, guide, kmax = _poisson_tables(float(c))
    u = draws.uniform(0, x.shape[1:]).ravel()
    row = x.ravel().astype(np.int64)
    k = guide[row * _GUIDE + (u * _GUIDE).astype(np.int64)]
    base = row * kmax
    todo = np.nonzero(cdf[base + k] < u)[0]
    while todo.size:
        k[todo] += 1
        todo = todo[cdf[base[todo] + k[todo]] < u[todo]]
    return np.clip(k.reshape(x.shape) / c, 0, 1) * 255


def impulse_noise(x: np.ndarray, c: float, draws: Draws, ctx: Context) -> np.ndarray:
    """skimage ``random_noise(mode='s&p', amount=c)``: each value flips with probability c,
    to 1 or 0 with equal probability (salt_vs_pepper=0.5)."""
    xf = x / 255.0
    flipped = draws.uniform(0, x.shape[1:]) < c
    salted = draws.uniform(1, x.shape[1:]) < 0.5
    xf[flipped & salted] = 1.0
    xf[flipped & ~salted] = 0.0
    return np.clip(xf, 0, 1) * 255


def speckle_noise(x: np.ndarray, c: float, draws: Draws, ctx: Context) -> np.ndarray:
    """``clip(x + x * N(0, c), 0, 1) * 255`` on x in [0, 1]."""
    xf = x / 255.0
    return np.clip(xf + xf * draws.normal(0, x.shape[1:], scale=c), 0, 1) * 255
