"""Clean image sets accepted by ``tta corrupt --src``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tta.errors import DataError

_IMAGE_EXT = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def _labels_beside(images_path: Path) -> Path | None:
    name = images_path.name
    candidates = []
    if "images" in name:
        candidates.append(images_path.with_name(name.replace("images", "labels")))
    candidates.append(images_path.with_name("labels.npy"))
    return next((c for c in candidates if c.is_file()), None)


def _cifar_pickle(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from tta.data.clean import load_clean  # noqa: PLC0415  (numpy arrays and plain containers only)

    if (folder / "test_batch").is_file():
        images, labels = load_clean(folder / "test_batch", "cifar10")
    else:
        images, labels = load_clean(folder / "test", "cifar100")
    return np.ascontiguousarray(images), labels


def load_array_set(src: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 NHWC, memory-mapped when read from .npy; labels) from a clean set.

    Accepts an images ``.npy`` with labels beside it (``test_images.npy`` +
    ``test_labels.npy``, or ``labels.npy``), a folder holding ``test_images.npy``,
    or torchvision's CIFAR folder (``cifar-10-batches-py`` / ``cifar-100-python``
    or its parent), read from the pickles with an unpickler that admits arrays only.
    """
    src = Path(src).expanduser()
    if src.is_dir():
        for sub in ("cifar-10-batches-py", "cifar-100-python"):
            if (src / sub).is_dir():
                return _cifar_pickle(src / sub)
        if (src / "test_batch").is_file() or (src / "test").is_file():
            return _cifar_pickle(src)
        if (src / "test_images.npy").is_file():
            src = src / "test_images.npy"
        else:
            raise DataError(
                f"{src} holds no clean set; pass an images .npy (labels .npy beside it), "
                "a folder with test_images.npy, or torchvision's CIFAR folder"
            )
    if not src.is_file():
        raise DataError(f"clean set {src} does not exist; pass an existing .npy file or folder to --src")
    if src.suffix != ".npy":
        raise DataError(f"{src} is not a .npy file; pass an images .npy (N,H,W,3) uint8 or a folder")
    try:
        images = np.load(src, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise DataError(f"{src} is not a NumPy array file (no .npy header); pass an images .npy (N,H,W,3) uint8 "
                        "written by np.save, or a folder") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{src} holds {images.dtype} {images.shape}; expected (N, H, W, 3) uint8 images")
    lab_path = _labels_beside(src)
    if lab_path is None:
        raise DataError(f"no labels beside {src}; put {src.name.replace('images', 'labels')} or labels.npy next to it")
    labels = np.load(lab_path)
    if labels.shape != (len(images),):
        raise DataError(f"{lab_path} holds {labels.shape} labels for {len(images)} images; they must match")
    return images, labels


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
