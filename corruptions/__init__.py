"""Common corruptions of Hendrycks & Dietterich (CIFAR-10-C, Tiny-ImageNet-C, ImageNet-C).

Batched, seeded reimplementation of the original generators without OpenCV,
scikit-image or ImageMagick. See docs/corruptions.md.
"""
from __future__ import annotations

from .api import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS, corrupt
from .frost import find_frost_dir
from .presets import PRESETS, Preset

__all__ = [
    "ALL_CORRUPTIONS",
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "PRESETS",
    "Preset",
    "corrupt",
    "find_frost_dir",
]
