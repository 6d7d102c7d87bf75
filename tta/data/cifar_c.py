"""CIFAR-10-C / CIFAR-100-C in RobustBench's layout, memory-mapped.

``<data_dir>/CIFAR-10-C/<corruption>.npy`` holds (5·N, 32, 32, 3) uint8 images,
severity s in rows ``[(s-1)·N, s·N)``, and ``labels.npy`` the 5·N labels
(Hendrycks & Dietterich's files: N = 10,000). A folder written by ``tta corrupt``
carries a ``tta-corrupt.json`` manifest (``tta.data.manifest``) whose ``severities``
give the severity of each row block instead, e.g. ``--severities 5`` writes one
block of N rows. Files are checked before any image is read; images are read per
batch from the memory map.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .manifest import TTA_MANIFEST, describe_generated, read_manifest, severity_blocks
from .domain import ArrayDomain, open_npy, read_npy_header
from .domain_source import BENCHMARK_CORRUPTIONS, DomainSource

FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
SEVERITIES = 5

log = logging.getLogger(__name__)


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
        self.generated_by = read_manifest(self.root)
        self.chosen = bool(corruptions)
        #: severity of each row block of every file, in file order
        self.severities = severity_blocks(self.generated_by)
        if self.generated_by and not corruptions:  # a generated folder streams what it holds, canonical order first
            made_here = set(self.generated_by.get("corruptions") or present)
            names = [c for c in BENCHMARK_CORRUPTIONS if c in made_here] + sorted(made_here - set(BENCHMARK_CORRUPTIONS))
        else:
            names = list(corruptions) if corruptions else list(BENCHMARK_CORRUPTIONS) + [
                c for c in present if c not in BENCHMARK_CORRUPTIONS
            ]
        made = f"; {describe_generated(self.generated_by)}" if self.generated_by else ""
        super().__init__(f"{FOLDERS[dataset]} ({self.root}{made})", names, NUM_CLASSES[dataset])
        self.labels_all = self._read_labels()
        self._maps: dict[str, np.ndarray] = {}
        self.per_severity = len(self.labels_all) // len(self.severities)

    def default_domains(self) -> list[str]:
        """All the folder holds; a ``tta corrupt`` folder missing some of the 15 benchmark corruptions is refused
        rather than silently streamed as a shorter benchmark: name the domains to run just those."""
        if self.generated_by and not self.chosen:
            missing = [c for c in BENCHMARK_CORRUPTIONS if c not in self.corruptions]
            if missing:
                have = [c for c in self.corruptions if c in BENCHMARK_CORRUPTIONS]
                raise DataError(
                    f"{self.root} holds {len(have)} of the {len(BENCHMARK_CORRUPTIONS)} benchmark corruptions (missing: "
                    f"{', '.join(missing)}); pass --domains {','.join(self.corruptions)} to run what it holds, or "
                    "generate the rest with tta corrupt (--corruptions all)")
        return list(self.corruptions)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.generated_by:  # files written by `tta corrupt`, not the original CIFAR-C release
            out.update(generated="files", corruption_seed=self.generated_by.get("seed"), tta_corrupt=self.generated_by)
        return out

    def _read_labels(self) -> np.ndarray:
        path = self.root / "labels.npy"
        shape, dtype, _ = read_npy_header(path, "label file")
        blocks = len(self.severities)
        if len(shape) != 1 or shape[0] == 0 or shape[0] % blocks or not np.issubdtype(dtype, np.integer):
            where = f" ({TTA_MANIFEST} lists {blocks})" if self.generated_by else ""
            raise DataError(
                f"label file {path} holds {dtype} of shape {shape}; expected integers of shape ({blocks}*N,), "
                f"the N test labels repeated once per severity{where}"
            )
        labels = np.asarray(open_npy(path, "label file"), dtype=np.int64)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise DataError(f"label file {path} has labels outside 0..{self.num_classes - 1}; is it the right dataset?")
        return labels

    def check_files(self, names: list[str]) -> None:
        """Raise one error listing every missing corruption file."""
        missing = [n for n in names if not (self.root / f"{n}.npy").is_file()]
        if missing:
            fix = (f"generate them with tta corrupt --corruptions {','.join(missing)} --severities "
                   f"{','.join(map(str, self.severities))}" if self.generated_by else "re-download the folder (--download)")
            raise DataError(
                f"{self.root} lacks {len(missing)} corruption file(s): {', '.join(m + '.npy' for m in missing)}; "
                f"{fix}, or pass --domains with the corruptions you have"
            )

    def check_severity(self, severity: int) -> None:
        """Raise unless the folder's files hold ``severity``."""
        if severity not in self.severities:
            have = ",".join(map(str, self.severities))
            raise DataError(
                f"{self.root} holds severities {have} only ({describe_generated(self.generated_by)}; see {TTA_MANIFEST}), "
                f"not {severity}; pass --severity {self.severities[-1]}, or generate it with tta corrupt --severities {severity} "
                "into another folder"
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
        self.check_severity(severity)
        block = self.severities.index(severity)
        lo, hi = block * self.per_severity, (block + 1) * self.per_severity
        return ArrayDomain(images[lo:hi], self.labels_all[lo:hi], name, severity, str(path))
