"""Each variant's cost, from one source for every page and table of a report.

Either measured by the runs themselves (wall time per image against the source model's in the same
setting; peak memory against source's), or read from a saved ``benchmarks/bench_methods.py`` Markdown
table (the ratio of thread CPU time to the source forward on the same batch, and peak MiB over source),
which is steadier than img/s measured on a shared machine. Whichever is used is named on the page.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .labels import variant_label


@dataclass(frozen=True)
class Cost:
    ratio: float | None  # × the source forward
    peak_memory: float | None  # peak MiB over source


def from_runs(settings) -> tuple[dict[str, Cost], str]:  # noqa: ANN001  (list[SettingView]; avoids a cycle)
    """Median over settings of source img/s ÷ the variant's img/s; the largest peak memory over source's."""
    ratios: dict[str, list[float]] = {}
    mems: dict[str, list[float]] = {}
    for view in settings:
        src = view.source
        if src is None:
            continue
        for c in view.cells:
            if c.images_per_s and src.images_per_s:
                ratios.setdefault(c.label, []).append(src.images_per_s / c.images_per_s)
            if c.peak_mb is not None and src.peak_mb is not None:
                mems.setdefault(c.label, []).append(c.peak_mb - src.peak_mb)
    labels = set(ratios) | set(mems)
    costs = {lab: Cost(statistics.median(ratios[lab]) if lab in ratios else None,
                       max(mems[lab]) if lab in mems else None) for lab in labels}
    return costs, ("measured by these runs: wall time per image relative to the source model's in the same "
                   "setting (median over settings), peak memory minus the source run's")


_ROW = re.compile(r"^\|\s*([^|]+?)\s*\|")


def from_bench(path: str | Path) -> tuple[dict[str, Cost], str]:
    """The ratio and peak-MiB columns of a ``bench_methods.py`` Markdown file (first table that has a method).

    Rows are named as ``tta run`` names variants (``lame (stats=unmix-tns)``) and relabelled here.
    """
    path = Path(path).expanduser()
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the cost table {path} ({exc}); pass a bench_methods.py Markdown file") from None
    ratio: dict[str, float] = {}
    peak_memory: dict[str, float] = {}
    for line in lines:
        if not line.startswith("| ") or "x |" not in line:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"([\w.-]+)(?: \(stats=([\w.-]+)\))?", cells[0])
        if not m or len(cells) < 3 or not cells[2].endswith("x"):
            continue
        label = variant_label(m.group(1), None, {"stats": m.group(2)} if m.group(2) else {}, {"dataset": "cifar10"})
        try:
            ratio.setdefault(label, float(cells[2].rstrip("x")))
            if len(cells) > 5 and "(" in cells[5]:
                peak_memory.setdefault(label, float(cells[5].split("(")[-1].rstrip(")")))
        except ValueError:
            continue
    if not ratio:
        raise InputError(f"{path} holds no bench_methods.py table (| method | ... | ratio x | ...); pass one")
    costs = {lab: Cost(r, peak_memory.get(lab)) for lab, r in ratio.items()}
    return costs, (f"from {path.name}: thread CPU time per batch relative to the source forward, and peak "
                   "resident memory over the source model's, measured by benchmarks/bench_methods.py")
