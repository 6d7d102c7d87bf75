"""The embedded offline demo: real handwritten digits under simple corruptions.

NOT CIFAR-10-C. The images are scikit-learn's 1,797 handwritten digits (8x8,
shipped inside the scikit-learn package, so no download), upscaled to 32x32 and
coloured with a random foreground/background per image (fixed seed). 1,000
images train a small BatchNorm CNN on first use (cached in the user cache dir);
the other 797 form the test domains, each a corruption implemented here in numpy.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .domain import ArrayDomain
from .domain_source import DomainSource

DEMO_LABEL = "DEMO: scikit-learn digits 32x32 with synthetic corruptions (NOT CIFAR-10-C)"
DEMO_CORRUPTIONS = ("gaussian_noise", "impulse_noise", "defocus_blur", "contrast", "brightness", "pixelate")
DATA_SEED = 0
N_TRAIN = 1000

# Per-severity strengths (1..5), between the CIFAR and ImageNet presets of the
# corruption spec; contrast, brightness and pixelate use the CIFAR values.
_GAUSS = (0.06, 0.10, 0.14, 0.18, 0.22)
_IMPULSE = (0.02, 0.04, 0.06, 0.10, 0.15)
_BLUR_SIGMA = (0.6, 0.9, 1.2, 1.6, 2.0)
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
_BRIGHT = (0.05, 0.1, 0.15, 0.2, 0.3)
_PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)


def digits_rgb32() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as (N, 32, 32, 3) uint8 RGB and int64 labels."""
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415
    except ImportError:
        raise DataError("the demo uses scikit-learn's digits; pip install 'tta-toolkit[demo]' (scikit-learn) and rerun") from None
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp_(0, 1)
    rng = np.random.default_rng(DATA_SEED)
    fg = rng.uniform(0.55, 1.0, size=(len(x), 3)).astype(np.float32)
    bg = rng.uniform(0.0, 0.35, size=(len(x), 3)).astype(np.float32)
    a = x.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 1)
    rgb = bg[:, None, None, :] * (1 - a) + fg[:, None, None, :] * a
    return (rgb * 255 + 0.5).astype(np.uint8), digits.target.astype(np.int64)


def demo_split() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train images, labels), (test images, labels): a fixed random split."""
    images, labels = digits_rgb32()
    perm = np.random.default_rng(DATA_SEED).permutation(len(labels))
    tr, te = perm[:N_TRAIN], np.sort(perm[N_TRAIN:])
    return (images[tr], labels[tr]), (images[te], labels[te])


def demo_corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Corrupt uint8 (N, 32, 32, 3) images; deterministic given ``seed``."""
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    rng = np.random.default_rng([seed, DEMO_CORRUPTIONS.index(name), severity])
    x = images.astype(np.float32) / 255
    s = severity - 1
    if name == "gaussian_noise":
        x = x + rng.normal(0, _GAUSS[s], x.shape).astype(np.float32)
    elif name == "impulse_noise":
        u = rng.random(x.shape, dtype=np.float32)
        x = np.where(u < _IMPULSE[s] / 2, 0.0, np.where(u > 1 - _IMPULSE[s] / 2, 1.0, x))
    elif name == "defocus_blur":
        x = gaussian_filter(x, sigma=(0, _BLUR_SIGMA[s], _BLUR_SIGMA[s], 0))
    elif name == "contrast":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * _CONTRAST[s] + mean
    elif name == "brightness":
        x = x + _BRIGHT[s]
    elif name == "pixelate":
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        side = max(1, int(32 * _PIXELATE[s]))
        t = F.interpolate(F.interpolate(t, size=(side, side), mode="area"), size=(32, 32), mode="nearest")
        x = t.permute(0, 2, 3, 1).numpy()
    else:
        raise DataError(f"unknown demo corruption {name!r}; choose from {', '.join(DEMO_CORRUPTIONS)}")
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


class DemoSource(DomainSource):
    """The demo's test domains, computed in memory (797 images each, about 2.4 MB)."""

    dataset = "demo"
    is_demo = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__(DEMO_LABEL, list(DEMO_CORRUPTIONS), 10)
        (_, _), (self.images, self.labels) = demo_split()
        self.seed = seed

    def _make(self, name: str, severity: int) -> ArrayDomain:
        images = demo_corrupt(self.images, name, severity, self.seed)
        return ArrayDomain(images, self.labels, name, severity, "demo:sklearn-digits")

    def describe(self) -> dict:
        return {**super().describe(), "note": "embedded demo, not a benchmark; numbers are not comparable to CIFAR-10-C"}
