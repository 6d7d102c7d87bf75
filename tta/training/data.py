"""Clean training/test sets: the shared CIFAR-10 ``.npy`` layout or torchvision's CIFAR folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

_TV_FOLDERS = {"cifar-10-batches-py": "CIFAR10", "cifar-100-python": "CIFAR100"}


@dataclass(frozen=True)
class ImageArrays:
    """uint8 (N, H, W, 3) images (often memory-mapped) and int64 (N,) labels."""

    images: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def _npy_pair(images_path: Path) -> ImageArrays:
    stem = images_path.name
    if "images" not in stem:
        raise DataError(
            f"{images_path} is not named like '<split>_images.npy'; pass the images file whose labels "
            "sit beside it as '<split>_labels.npy', or the folder holding both"
        )
    labels_path = images_path.with_name(stem.replace("images", "labels"))
    for p in (images_path, labels_path):
        if not p.is_file():
            raise DataError(f"{p} does not exist; pass a folder holding <split>_images.npy and <split>_labels.npy")
    try:
        images = np.load(images_path, mmap_mode="r")
        labels = np.load(labels_path).astype(np.int64, copy=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {images_path} or {labels_path} ({exc}); re-create the .npy files") from None
    return _checked(ImageArrays(images, labels, str(images_path)))


def _torchvision(root: Path, split: str) -> ImageArrays:
    # The CIFAR python batches are pickles; torchvision compares each file with the
    # official MD5 before unpickling it, so only the published files are ever loaded.
    import torchvision  # noqa: PLC0415

    folder = root.name if root.name in _TV_FOLDERS else next(n for n in _TV_FOLDERS if (root / n).is_dir())
    base = root.parent if root.name in _TV_FOLDERS else root
    cls = getattr(torchvision.datasets, _TV_FOLDERS[folder])
    try:
        ds = cls(str(base), train=split == "train", download=False)
    except RuntimeError as exc:
        raise DataError(f"torchvision cannot read {base / folder} ({exc}); download CIFAR again into {base}") from None
    return _checked(ImageArrays(np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64), str(base / folder)))


def load_images(path: str | Path, split: str = "train") -> ImageArrays:
    """Read a clean set.

    ``path`` is one of: a ``<split>_images.npy`` file (labels beside it as
    ``<split>_labels.npy``); a folder holding ``{split}_images.npy``; or a
    torchvision CIFAR root (the folder holding ``cifar-10-batches-py``, or that
    folder itself). The npy images are memory-mapped, not read into memory.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return _npy_pair(p)
    if not p.is_dir():
        raise DataError(f"data path {p} does not exist; pass train_images.npy, its folder, or a torchvision CIFAR root")
    if p.name in _TV_FOLDERS or any((p / n).is_dir() for n in _TV_FOLDERS):
        return _torchvision(p, split)
    return _npy_pair(p / f"{split}_images.npy")


def find_test_split(train_path: str | Path) -> ImageArrays:
    """The test split that belongs to ``train_path`` (same folder, or torchvision's test batch)."""
    p = Path(train_path).expanduser()
    if p.is_file():
        return _npy_pair(p.with_name(p.name.replace("train", "test")))
    return load_images(p, split="test")


def _checked(data: ImageArrays) -> ImageArrays:
    x, y = data.images, data.labels
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise DataError(
            f"{data.source} holds {x.dtype} images of shape {x.shape}; expected uint8 (N, H, W, 3) RGB, "
            "convert with (images * 255).astype(np.uint8) in NHWC order"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{data.source}: {len(x)} images but labels of shape {y.shape}; the label file belongs to another set")
    if len(y) and (y.min() < 0):
        raise DataError(f"{data.source}: negative labels found; labels must be class indices 0..K-1")
    return data
