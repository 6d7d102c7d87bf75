"""Counter-based random numbers keyed by (seed, corruption, image index).

Every draw for image ``i`` is a pure function of ``(seed, name, site,
indices[i], position)``, so results do not depend on batch size, chunking or
order. The severity is deliberately left out of the key: an image gets the same
noise field, angle or crop at every severity and only the parameters change, so
severity curves compare like with like (the original drew them independently
from numpy's global generator; each severity's distribution is unchanged). Draws are computed for the whole batch at once: a SplitMix64 stream per
image (its start hashed from the key and the image index), advanced by the
position of the value inside that image's draw.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtri

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class Draws:
    """Random draws for a batch; ``site`` separates independent draws of one corruption."""

    def __init__(self, seed: int, name_id: int, indices: np.ndarray) -> None:
        self.seed = int(seed)
        self.name_id = int(name_id)
        self.indices = np.asarray(indices, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.indices)

    def _bits(self, site: int, count: int) -> np.ndarray:
        """(N, count) uint64 hashes: a SplitMix64 stream per image."""
        key = np.random.SeedSequence([self.seed, self.name_id, site]).generate_state(1, np.uint64)[0]
        with np.errstate(over="ignore"):
            start = _mix(key ^ _mix(self.indices + _GOLDEN))
            steps = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
            return _mix(start[:, None] + steps[None, :])

    def uniform(self, site: int, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """Uniform float64 in the open interval (low, high), shape (N, *shape), 32-bit resolution.

        Each 64-bit hash gives two values (its high and low halves).
        """
        count = int(np.prod(shape, dtype=np.int64))
        bits = self._bits(site, (count + 1) // 2).view(np.uint32).reshape(len(self), -1)[:, :count]
        u = bits.astype(np.float64)
        u += 0.5
        u *= 1.0 / 2.0**32
        if low != 0.0 or high != 1.0:
            u = low + (high - low) * u
        return u.reshape((len(self),) + tuple(shape))

    def normal(self, site: int, shape: tuple[int, ...], loc: float = 0.0, scale: float = 1.0) -> np.ndarray:
        """Gaussian float64 by inversion of the uniform draw."""
        z = ndtri(self.uniform(site, shape))
        if scale != 1.0:
            z *= scale
        if loc != 0.0:
            z += loc
        return z

    def integers(self, site: int, low: int, high: int, shape: tuple[int, ...]) -> np.ndarray:
        """Integers in [low, high), like ``np.random.randint(low, high)``."""
        u = self.uniform(site, shape)
        return (low + np.floor(u * (high - low))).astype(np.int64)
