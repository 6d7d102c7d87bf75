"""Check a CIFAR-C folder file by file against the RobustBench layout.

A folder from the original release must hold the 15 benchmark corruptions at
severities 1..5. A folder written by ``tta corrupt`` is checked against its
``tta-corrupt.json`` manifest: the corruptions and severities it lists, nothing
more. ``domains`` restricts the check to the corruptions a run will use.

RobustBench ships ``<corruption>.npy`` as uint8 (5N, 32, 32, 3), values 0..255, and
``labels.npy``. uint8 files are checked from their headers alone; float files are
scanned for their value range, since a float file saved as 0..255 instead of [0, 1]
would be read as almost-white images and give a silently wrong error rate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .manifest import describe_generated
from .cifar_c import CifarCSource
from .domain_source import BENCHMARK_CORRUPTIONS


def check_cifar_c(
    data_dir: str | Path, dataset: str = "cifar10", domains: Sequence[str] | None = None
) -> list[tuple[str, bool, str]]:
    """(file, ok, detail) for ``labels.npy`` and each corruption the folder should hold.

    Which corruptions: ``domains`` when given; else those the manifest lists for a
    generated folder; else the 15 benchmark corruptions plus any extra ones on disk.
    Raises ``DataError`` when the folder or its labels are unusable.
    """
    source = CifarCSource(data_dir, dataset, list(domains) if domains else None)
    sevs = ",".join(map(str, source.severities))
    origin = describe_generated(source.generated_by) if source.generated_by else "original layout"
    rows: list[tuple[str, bool, str]] = [
        ("labels.npy", True,
         f"{len(source.labels_all)} labels, {source.per_severity} per severity; severities {sevs} ({origin})")
    ]
    for name in source.corruptions:
        path = source.root / f"{name}.npy"
        if not path.is_file():
            rows.append((path.name, False, "missing" + ("" if name in BENCHMARK_CORRUPTIONS else " (extra)")))
            continue
        try:
            dom = source.domain(name, source.severities[0])
        except DataError as exc:
            rows.append((path.name, False, str(exc)))
            continue
        shape = dom.images.shape
        detail = f"{shape[0] * len(source.severities)} images of {shape[1]}x{shape[2]}x{shape[3]} {dom.images.dtype}"
        ok, why = _robustbench_layout(path, dom.images.dtype)
        rows.append((path.name, ok, detail + (f": {why}" if why else "")))
    return rows


def fix_for(data_dir: str | Path, dataset: str = "cifar10") -> str:
    """What to do about missing or broken files of this folder, for the error message."""
    source = CifarCSource(data_dir, dataset)
    if source.generated_by:
        sevs = ",".join(map(str, source.severities))
        return (f"regenerate them with tta corrupt --severities {sevs} --seed {source.generated_by.get('seed')}, "
                "or check only the corruptions a run uses with --domains")
    return "re-download with `tta data fetch`, or check only the corruptions a run uses with --domains"


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
