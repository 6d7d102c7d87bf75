"""Check a CIFAR-C folder file by file without reading any image data."""
from __future__ import annotations

from pathlib import Path

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
        rows.append((path.name, True, f"{shape[0] * 5} images of {shape[1]}x{shape[2]}x{shape[3]} {dom.images.dtype}"))
    return rows
