"""Check a CIFAR-C folder file by file against the RobustBench layout.

RobustBench ships ``<corruption>.npy`` as uint8 (5N, 32, 32, 3), values 0..255, and
``labels.npy``. uint8 files are checked from their headers alone; float files are
scanned for their value range, since a float file saved as 0..255 instead of [0, 1]
would be read as almost-white images and give a silently wrong error rate.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .cifar_c import CifarCSource
from .source import BENCHMARK_CORRUPTIONS


def check_cifar_c(data_dir: str | Path, dataset: str = "cifar10") -> list[tuple[str, bool, str]]:
    """(file, ok, detail) for ``labels.npy`` and each of the 15 benchmark corruptions plus any extra ones.

    Raises ``DataError`` when the folder or its labels are unusable.
    """
    source = CifarCSource(data_dir, dataset)
    rows: list[tuple[str, bool, str]] = [
        ("labels.npy", True, f"{len(source.labels_all)} labels, {source.per_severity} per severity")
    ]
    for name in source.corruptions:
        path = source.root / f"{name}.npy"
        if not path.is_file():
            rows.append((path.name, False, "missing" + ("" if name in BENCHMARK_CORRUPTIONS else " (extra)")))
            continue
        try:
            dom = source.domain(name, 1)
        except DataError as exc:
            rows.append((path.name, False, str(exc)))
            continue
        shape = dom.images.shape
        detail = f"{shape[0] * 5} images of {shape[1]}x{shape[2]}x{shape[3]} {dom.images.dtype}"
        ok, why = _robustbench_layout(path, dom.images.dtype)
        rows.append((path.name, ok, detail + (f": {why}" if why else "")))
    return rows


#: images per read when scanning a float file for its value range
SCAN_CHUNK = 4096


def _robustbench_layout(path: Path, dtype: np.dtype) -> tuple[bool, str]:
    """(ok, remark): uint8 0..255 is the layout; float is accepted only with values in [0, 1]."""
    if dtype == np.uint8:
        return True, ""
    arr = np.load(path, mmap_mode="r")
    lo, hi = np.inf, -np.inf
    for start in range(0, len(arr), SCAN_CHUNK):
        block = np.asarray(arr[start : start + SCAN_CHUNK])
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    if lo < 0 or hi > 1:
        return False, (f"float values in [{lo:.3g}, {hi:.3g}], expected [0, 1] (or uint8 0..255 as RobustBench ships); "
                       "divide by 255 or save as uint8")
    return True, "float in [0, 1] (RobustBench ships uint8; tta reads both)"
