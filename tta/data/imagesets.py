"""The one reader of clean (uncorrupted) image sets, for ``tta run``, ``tta train`` and ``tta corrupt``.

Accepted layouts:

- ``<split>_images.npy`` with ``<split>_labels.npy`` beside it (or ``labels.npy``),
  uint8 (N, H, W, 3), memory-mapped;
- a folder holding ``<split>_images.npy``;
- torchvision's CIFAR python folder (``cifar-10-batches-py`` / ``cifar-100-python``),
  the folder itself or its parent, or one pickled batch file. The pickles are read
  with an unpickler that admits numpy arrays and plain containers only, so no MD5
  check of the published files is needed before loading them.

This module depends on numpy and ``tta.errors`` only, so the corruption generator
can use it without importing the dataset readers of ``tta.data``.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

#: torchvision folder -> (test batches, train batches, label key)
CIFAR_PYTHON = {
    "cifar-10-batches-py": (("test_batch",), tuple(f"data_batch_{i}" for i in range(1, 6)), "labels"),
    "cifar-100-python": (("test",), ("train",), "fine_labels"),
}

# A CIFAR python batch is a dict of lists, strings and one numpy array; nothing else may load.
_ARRAY_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


@dataclass(frozen=True)
class ImageArrays:
    """uint8 (N, H, W, 3) images (often memory-mapped) and int64 (N,) labels."""

    images: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)


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


def read_cifar_batches(paths: list[Path], label_key: str) -> ImageArrays:
    """Pickled CIFAR batches as NHWC uint8 images and int64 labels, in the order given."""
    images, labels = [], []
    for path in paths:
        batch = read_cifar_batch(path)
        key = label_key if label_key in batch else ("fine_labels" if "fine_labels" in batch else "labels")
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            y = np.asarray(batch[key], dtype=np.int64)
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path} is not a CIFAR python batch ({exc}); re-download cifar-10-python.tar.gz") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(y) != len(data):
            raise DataError(f"{path} holds data of shape {data.shape}; expected (N, 3072) with N labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(y)
    where = str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} batches)"
    return checked(ImageArrays(np.concatenate(images), np.concatenate(labels), where))


def labels_beside(images_path: Path) -> Path | None:
    """``<split>_labels.npy`` for ``<split>_images.npy``, else ``labels.npy``, if present."""
    candidates = []
    if "images" in images_path.name:
        candidates.append(images_path.with_name(images_path.name.replace("images", "labels")))
    candidates.append(images_path.with_name("labels.npy"))
    return next((c for c in candidates if c.is_file()), None)


def read_npy_pair(images_path: Path) -> ImageArrays:
    """A memory-mapped images ``.npy`` and the labels beside it."""
    if not images_path.is_file():
        raise DataError(f"{images_path} does not exist; pass a folder holding <split>_images.npy and <split>_labels.npy")
    try:
        images = np.load(images_path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise DataError(f"{images_path} is not a NumPy array file (no .npy header); pass an images .npy "
                        "(N, H, W, 3) uint8 written by np.save, or a folder") from None
    labels_path = labels_beside(images_path)
    if labels_path is None:
        want = images_path.name.replace("images", "labels") if "images" in images_path.name else "labels.npy"
        raise DataError(f"no labels beside {images_path}: {images_path.with_name(want)} does not exist; "
                        "put the labels there as a .npy")
    try:
        labels = np.load(labels_path, allow_pickle=False).astype(np.int64, copy=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {labels_path} ({exc}); re-create the labels .npy") from None
    return checked(ImageArrays(images, labels, str(images_path)))


def _cifar_python(folder: Path, split: str, layout: str) -> ImageArrays:
    test, train, key = CIFAR_PYTHON[layout]
    paths = [folder / n for n in (train if split == "train" else test)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(p.name for p in missing)}; download CIFAR again into {folder.parent}")
    return read_cifar_batches(paths, key)


def load_image_set(path: str | Path, split: str = "test") -> ImageArrays:
    """Read a clean set in any accepted layout (module docstring); ``split`` picks test or train."""
    p = Path(path).expanduser()
    if p.is_dir():
        for layout in CIFAR_PYTHON:
            if p.name == layout:
                return _cifar_python(p, split, layout)
            if (p / layout).is_dir():
                return _cifar_python(p / layout, split, layout)
        if (p / "test_batch").is_file():  # a CIFAR-10 python folder under another name
            return _cifar_python(p, split, "cifar-10-batches-py")
        if (p / "test").is_file():
            return _cifar_python(p, split, "cifar-100-python")
        npy = p / f"{split}_images.npy"
        if not npy.is_file():
            raise DataError(
                f"{p} holds no clean {split} set; pass a {split}_images.npy (labels beside it), a folder holding "
                "one, or torchvision's CIFAR folder"
            )
        return read_npy_pair(npy)
    if not p.is_file():
        raise DataError(f"clean set {p} does not exist; pass an images .npy, its folder, or torchvision's CIFAR folder")
    if p.suffix == ".npy":
        return read_npy_pair(p)
    return read_cifar_batches([p], "fine_labels" if p.parent.name == "cifar-100-python" else "labels")


def checked(data: ImageArrays) -> ImageArrays:
    """Raise ``DataError`` unless the images are uint8 NHWC RGB with one label each."""
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
