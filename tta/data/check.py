"""Check a CIFAR-C folder file by file without reading any image data.

A folder from the original release must hold the 15 benchmark corruptions at
severities 1..5. A folder written by ``tta corrupt`` is checked against its
``tta-corrupt.json`` manifest: the corruptions and severities it lists, nothing
more. ``domains`` restricts the check to the corruptions a run will use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import DataError
from ..manifest import describe_generated
from .cifar_c import CifarCSource
from .source import BENCHMARK_CORRUPTIONS


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
        rows.append((path.name, True,
                     f"{shape[0] * len(source.severities)} images of {shape[1]}x{shape[2]}x{shape[3]} {dom.images.dtype}"))
    return rows


def fix_for(data_dir: str | Path, dataset: str = "cifar10") -> str:
    """What to do about missing or broken files of this folder, for the error message."""
    source = CifarCSource(data_dir, dataset)
    if source.generated_by:
        sevs = ",".join(map(str, source.severities))
        return (f"regenerate them with tta corrupt --severities {sevs} --seed {source.generated_by.get('seed')}, "
                "or check only the corruptions a run uses with --domains")
    return "re-download with `tta data fetch`, or check only the corruptions a run uses with --domains"
