"""Clean training/test sets for ``tta train``, read by ``tta.data.imagesets``."""
from __future__ import annotations

from pathlib import Path

from ..data.imagesets import ImageArrays, load_image_set, read_npy_pair

__all__ = ["ImageArrays", "find_test_split", "load_images"]


def load_images(path: str | Path, split: str = "train") -> ImageArrays:
    """Read a clean set (``tta.data.imagesets``).

    ``path`` is one of: a ``<split>_images.npy`` file (labels beside it as
    ``<split>_labels.npy``); a folder holding ``{split}_images.npy``; or a
    torchvision CIFAR root (the folder holding ``cifar-10-batches-py``, or that
    folder itself). The npy images are memory-mapped, not read into memory.
    """
    return load_image_set(path, split)


def find_test_split(train_path: str | Path) -> ImageArrays:
    """The test split that belongs to ``train_path`` (same folder, or torchvision's test batch)."""
    p = Path(train_path).expanduser()
    if p.is_file():
        return read_npy_pair(p.with_name(p.name.replace("train", "test")))
    return load_image_set(p, "test")
