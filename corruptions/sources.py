"""Clean image sets accepted by ``tta corrupt --src``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tta.errors import DataError
from tta.data.imagesets import load_image_set

_IMAGE_EXT = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def load_array_set(src: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 NHWC, memory-mapped when read from .npy; labels) from a clean set.

    Accepts an images ``.npy`` with labels beside it (``test_images.npy`` +
    ``test_labels.npy``, or ``labels.npy``), a folder holding ``test_images.npy``,
    or torchvision's CIFAR folder (``cifar-10-batches-py`` / ``cifar-100-python``
    or its parent), read by ``tta.data.imagesets``.
    """
    data = load_image_set(src, "test")
    return data.images, data.labels


def list_image_folder(src: str | Path) -> list[tuple[str, Path]]:
    """(class folder name, file) for an ImageFolder tree ``src/<wnid>/<file>``, sorted."""
    src = Path(src).expanduser()
    if not src.is_dir():
        raise DataError(f"image folder {src} does not exist; pass the clean val folder (class sub-folders) to --src")
    files = [
        (d.name, f)
        for d in sorted(p for p in src.iterdir() if p.is_dir())
        for f in sorted(d.iterdir())
        if f.suffix.lower() in _IMAGE_EXT
    ]
    if not files:
        raise DataError(f"{src} has no class sub-folders with images; expected {src}/<class>/<image>.JPEG")
    return files
