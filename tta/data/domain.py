"""A domain: one (corruption, severity) set of labelled images, read a batch at a time."""
from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .identity import file_digest


class Domain:
    """Labelled images of one domain. Subclasses implement ``load_uint8`` or ``load``.

    ``labels`` is a small int64 array held in memory; images stay on disk (or are
    generated) and are materialized one batch at a time.
    """

    #: DataLoader workers that help this domain (file decoding); 0 = read in the main process
    preferred_workers: int = 0

    def __init__(self, name: str, severity: int | None, labels: np.ndarray, source: str) -> None:
        self.name = name
        self.severity = severity
        self.labels = np.array(labels, dtype=np.int64)  # small; a private, writable copy
        self.source = source

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def key(self) -> str:
        return self.name if self.severity is None else f"{self.name}@{self.severity}"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "severity": self.severity, "size": len(self), "source": self.source}

    def identity(self) -> tuple[Any, ...]:
        """(key, content digest): what a saved partial run must find again to resume on this domain.

        The source file's size and sampled content (:func:`tta.data.identity.file_digest`), not
        its path or modification time; a domain without a readable file (generated from memory,
        embedded demo data) keeps its source string.
        """
        if self.source and os.path.isfile(self.source):
            try:
                return (self.key, file_digest(self.source))
            except OSError:
                pass
        return (self.key, self.source)

    def load(self, indices: np.ndarray) -> torch.Tensor:
        """Images ``indices`` as float (B, C, H, W) in [0, 1]."""
        return to_float_nchw(self.load_uint8(indices), f"{self.source} ({self.key})")

    def load_uint8(self, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ArrayDomain(Domain):
    """Images in an (N, H, W, C) array, usually a read-only memory map of a ``.npy`` file."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str, severity: int | None, source: str) -> None:
        if len(images) != len(labels):
            raise DataError(f"{source}: {len(images)} images but {len(labels)} labels; give one label per image")
        super().__init__(name, severity, labels, source)
        self.images = images

    #: bytes read from a memory map before its pages are dropped from this process's RSS
    release_every: int = 8 << 20

    def load(self, indices: np.ndarray) -> torch.Tensor:
        rows = self.images[np.asarray(indices)]
        self._release_pages(rows.nbytes)
        return to_float_nchw(rows, f"{self.source} ({self.key})")

    def _release_pages(self, nbytes: int) -> None:
        # Pages of a read-only file mapping stay resident (and count in RSS) once
        # touched; dropping them now and then keeps a pass over a 150 MB file from
        # growing the process by the file's size. They are re-read from the page
        # cache if touched again.
        mm = getattr(self.images, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        self._since_release = getattr(self, "_since_release", 0) + nbytes
        if self._since_release >= self.release_every:
            mm.madvise(mmap.MADV_DONTNEED)
            self._since_release = 0


def to_float_nchw(rows: np.ndarray, where: str) -> torch.Tensor:
    """(B, H, W, C) uint8 or float [0, 1] -> float32 (B, C, H, W) in [0, 1], rejecting NaN."""
    if rows.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(rows)).permute(0, 3, 1, 2).float().div_(255)
    x = torch.from_numpy(np.asarray(rows, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()
    if not torch.isfinite(x).all():
        raise DataError(f"{where}: images contain NaN or infinite values; regenerate the file or remove those images")
    return x


def open_npy(path: Path, what: str) -> np.ndarray:
    """Memory-map a ``.npy`` file, with a one-line error when it is missing or truncated."""
    header = read_npy_header(path, what)
    shape, dtype, offset = header
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def read_npy_header(path: Path, what: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a ``.npy`` file, checking that the data is complete."""
    if not path.is_file():
        raise DataError(f"{what} {path} is missing; place the file there or point --data-dir at the folder that holds it")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{what} {path} is not a readable .npy file ({exc}); re-download or regenerate it") from None
    if fortran or dtype.hasobject:
        raise DataError(f"{what} {path} holds a Fortran-ordered or object array; save it with np.save(path, np.ascontiguousarray(a))")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise DataError(
            f"{what} {path} is truncated ({actual:,} of {expected:,} bytes for shape {shape}); "
            "re-download or regenerate the file"
        )
    return tuple(int(s) for s in shape), dtype, offset
