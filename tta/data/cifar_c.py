"""CIFAR-10-C / CIFAR-100-C in RobustBench's layout, memory-mapped.

``<data_dir>/CIFAR-10-C/<corruption>.npy`` holds (5·N, 32, 32, 3) uint8 images,
severity s in rows ``[(s-1)·N, s·N)``, and ``labels.npy`` the 5·N labels
(Hendrycks & Dietterich's files: N = 10,000). Files are checked before any image
is read; images are read per batch from the memory map.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .domain import ArrayDomain, open_npy, read_npy_header
from .source import BENCHMARK_CORRUPTIONS, DomainSource

FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
SEVERITIES = 5


def cifar_c_dir(data_dir: str | Path, dataset: str = "cifar10") -> Path:
    return Path(data_dir).expanduser() / FOLDERS[dataset]


class CifarCSource(DomainSource):
    """The corruption files of one CIFAR-C folder. Extra corruptions present on disk are usable too."""

    def __init__(self, data_dir: str | Path, dataset: str = "cifar10", corruptions: list[str] | None = None) -> None:
        if dataset not in FOLDERS:
            raise DataError(f"no CIFAR-C layout for dataset {dataset!r}; use one of {', '.join(FOLDERS)}")
        self.dataset = dataset
        self.root = cifar_c_dir(data_dir, dataset)
        if not self.root.is_dir():
            raise DataError(
                f"{self.root} does not exist; put RobustBench's {FOLDERS[dataset]} folder (labels.npy and "
                f"<corruption>.npy files) under --data-dir, or pass --download"
            )
        present = sorted(p.stem for p in self.root.glob("*.npy") if p.stem != "labels")
        names = list(corruptions) if corruptions else list(BENCHMARK_CORRUPTIONS) + [
            c for c in present if c not in BENCHMARK_CORRUPTIONS
        ]
        super().__init__(f"{FOLDERS[dataset]} ({self.root})", names, NUM_CLASSES[dataset])
        self.labels_all = self._read_labels()
        self._maps: dict[str, np.ndarray] = {}
        self.per_severity = len(self.labels_all) // SEVERITIES

    def _read_labels(self) -> np.ndarray:
        path = self.root / "labels.npy"
        shape, dtype, _ = read_npy_header(path, "label file")
        if len(shape) != 1 or shape[0] == 0 or shape[0] % SEVERITIES or not np.issubdtype(dtype, np.integer):
            raise DataError(
                f"label file {path} holds {dtype} of shape {shape}; expected integers of shape ({SEVERITIES}*N,), "
                "the N test labels repeated once per severity"
            )
        labels = np.asarray(open_npy(path, "label file"), dtype=np.int64)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise DataError(f"label file {path} has labels outside 0..{self.num_classes - 1}; is it the right dataset?")
        return labels

    def check_files(self, names: list[str]) -> None:
        """Raise one error listing every missing corruption file."""
        missing = [n for n in names if not (self.root / f"{n}.npy").is_file()]
        if missing:
            raise DataError(
                f"{self.root} lacks {len(missing)} corruption file(s): {', '.join(m + '.npy' for m in missing)}; "
                "re-download the folder (--download) or pass --domains with the corruptions you have"
            )

    def check_domains(self, names: list[str]) -> None:
        for name in names:
            super().check_corruption(name)
        self.check_files(names)

    def _make(self, name: str, severity: int) -> ArrayDomain:
        path = self.root / f"{name}.npy"
        shape, dtype, _ = read_npy_header(path, "corruption file")
        expected = (len(self.labels_all),)
        if len(shape) != 4 or shape[0] != expected[0] or shape[3] not in (1, 3):
            raise DataError(
                f"corruption file {path} has shape {shape} but labels.npy has {expected[0]} labels; "
                f"expected ({expected[0]}, H, W, 3) images, one per label"
            )
        if dtype != np.uint8 and dtype not in (np.float32, np.float64):
            raise DataError(f"corruption file {path} holds {dtype}; expected uint8 (0..255) or float in [0, 1]")
        if name not in self._maps:  # one mapping per file, shared by its five severities
            self._maps[name] = open_npy(path, "corruption file")
        images = self._maps[name]
        lo, hi = (severity - 1) * self.per_severity, severity * self.per_severity
        return ArrayDomain(images[lo:hi], self.labels_all[lo:hi], name, severity, str(path))
