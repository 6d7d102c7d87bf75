"""Clean (uncorrupted) test sets: ``.npy`` pairs or torchvision's CIFAR python folder."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from .domain import open_npy, read_npy_header

#: torchvision's folder names for the pickled CIFAR test batches
TORCHVISION_FOLDERS = {"cifar10": ("cifar-10-batches-py", "test_batch", "labels"),
                       "cifar100": ("cifar-100-python", "test", "fine_labels")}
#: ``<data_dir>/<name>/test_images.npy`` + ``test_labels.npy`` (uint8 NHWC, int labels)
NPY_FOLDERS = {"cifar10": "cifar10", "cifar100": "cifar100"}

# A CIFAR python batch is a dict of lists, strings and one numpy array; nothing else may load.
_ARRAY_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201  (pickle's signature)
        if (module, name) in _ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR batch never holds")


def read_cifar_batch(path: str | Path) -> dict:
    """One pickled CIFAR batch, refusing any object other than numpy arrays and plain containers."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError, IndexError) as exc:
        raise DataError(f"{path} is not a CIFAR python batch ({exc}); re-download cifar-10-python.tar.gz") from None
    if not isinstance(batch, dict) or "data" not in batch:
        raise DataError(f"{path} is not a CIFAR python batch (no 'data' entry); re-download cifar-10-python.tar.gz")
    return batch


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
    or torchvision's pickled test batch, read directly so that no MD5 check of the
    training batches is needed (spec §6), with an unpickler that admits numpy arrays
    and plain containers only.
    """
    path = Path(path)
    if path.suffix == ".npy":
        labels_path = path.with_name(path.name.replace("images", "labels"))
        shape, dtype, _ = read_npy_header(path, "clean image file")
        if len(shape) != 4 or shape[3] != 3 or dtype != np.uint8:
            raise DataError(f"clean image file {path} holds {dtype} {shape}; expected uint8 (N, H, W, 3)")
        labels = np.asarray(open_npy(labels_path, "clean label file"), dtype=np.int64)
        if labels.shape != (shape[0],):
            raise DataError(
                f"clean label file {labels_path} has shape {labels.shape} but {path} has {shape[0]} images; "
                "give one label per image"
            )
        return open_npy(path, "clean image file"), labels
    key = TORCHVISION_FOLDERS.get(dataset, TORCHVISION_FOLDERS["cifar10"])[2]
    batch = read_cifar_batch(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[key], dtype=np.int64)
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{path} is not a CIFAR python test batch ({exc}); re-download cifar-10-python.tar.gz") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path} holds data of shape {data.shape}; expected (N, 3072) with N labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels
