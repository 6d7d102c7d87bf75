"""Where ``tta run`` finds a clean (uncorrupted) test set; reading it is ``tta.data.imagesets``'s job."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .imagesets import load_image_set, read_cifar_batch, read_cifar_batches

__all__ = ["find_clean", "load_clean", "read_cifar_batch"]

#: torchvision's folder names for the pickled CIFAR test batches
TORCHVISION_FOLDERS = {"cifar10": ("cifar-10-batches-py", "test_batch", "labels"),
                       "cifar100": ("cifar-100-python", "test", "fine_labels")}
#: ``<data_dir>/<name>/test_images.npy`` + ``test_labels.npy`` (uint8 NHWC, int labels)
NPY_FOLDERS = {"cifar10": "cifar10", "cifar100": "cifar100"}

def find_clean(data_dir: str | Path, dataset: str = "cifar10") -> Path | None:
    """The clean test set of ``dataset`` under ``data_dir``, if one is there."""
    root = Path(data_dir).expanduser()
    npy = root / NPY_FOLDERS.get(dataset, dataset) / "test_images.npy"
    if npy.is_file():
        return npy
    if dataset in TORCHVISION_FOLDERS:
        folder, batch, _ = TORCHVISION_FOLDERS[dataset]
        pickled = root / folder / batch
        if pickled.is_file():
            return pickled
    return None


def load_clean(path: str | Path, dataset: str = "cifar10") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 (memory-mapped for ``.npy``) and int64 labels.

    ``path`` is a ``test_images.npy`` (its labels in ``test_labels.npy`` beside it)
    or torchvision's pickled test batch (``tta.data.imagesets``).
    """
    path = Path(path)
    if path.suffix != ".npy" and path.is_file():
        key = TORCHVISION_FOLDERS.get(dataset, TORCHVISION_FOLDERS["cifar10"])[2]
        data = read_cifar_batches([path], key)
    else:
        data = load_image_set(path, "test")
    return data.images, data.labels
