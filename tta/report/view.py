"""What the report shows, as plain numbers: one ``Cell`` per variant and setting, built from result documents
or from an archived report (a ``tta.leaderboard`` JSON whose result files are gone), then pooled.

An archived row holds its seeds' mean, spread, per-domain means and provenance; when it has one seed its
mean is that seed's error, so it pools exactly with result files of other seeds. A row of several archived
seeds cannot be extended (its per-seed errors are not known): that is refused, not approximated.
The flags the summary page states are computed here, from these numbers only.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..pipeline.setting import Setting
from .labels import variant_label
from .leaderboard import Board

#: flag thresholds, stated on the summary page
UNSTABLE_STD = 2.0  # points of sample std over seeds, in any setting
CORRELATION_MARGIN = 2.0  # points worse than source on i.i.d. labels and better under correlation
DIVERGE_GAP = 10.0  # points above its own first fifth, and above source on the same batches, over the last fifth
FIFTH = 0.2
#: the summary's badges (the full names are in their title and in the stated rules)
FLAG_BADGES = {"exploits label correlation": "label corr.", "unstable across seeds": "unstable",
               "diverges over the stream": "diverges", "non-finite": "non-finite"}


@dataclass
class Run:
    """One seed's provenance line."""

    seed: Any
    fingerprint: str
    checkpoint: str
    versions: str
    command: str
    error: float | None = None  # the seed's mean domain error, when known


@dataclass
class Cell:
    """One variant in one setting."""

    label: str
    method: str
    hparams: dict[str, Any]
    seeds: list[Any]
    seed_errors: dict[Any, float] | None  # None: an archived row of several seeds (only mean and std known)
    mean: float
    std: float | None
    domain_errors: dict[str, float]
    ece: float | None
    images_per_s: float | None
    peak_mb: float | None
    curve: list[float] | None  # online error per batch, mean over seeds
    nonfinite: list[str] = field(default_factory=list)  # 'seed S at batch B' where logits became NaN/inf
    runs: list[Run] = field(default_factory=list)
    origin: str = "result files"
    flags: list[str] = field(default_factory=list)
    delta: float | None = None  # mean minus source's mean in this setting


@dataclass
class SettingView:
    title: str
    short: str
    setting: Setting | None
    domains: list[str]
    shift: str
    delta: Any
    sorted: bool
    demo: bool
    cells: list[Cell]
    warnings: list[str]
    boundaries: list[int]
    memory_kind: str = ""
    any_doc: dict[str, Any] | None = None

    @property
    def source(self) -> Cell | None:
        return next((c for c in self.cells if c.method == "source"), None)

    @property
    def iid(self) -> bool:
        return self.delta is None and not self.sorted


def _versions(v: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v.get(k, '?')}" for k in ("tta", "torch", "numpy", "python"))


def cells_from_board(board: Board) -> list[Cell]:
    """The rows of a ``tta.report.leaderboard`` board (result documents) as cells."""
    from ..sweep.cells import rerun_command  # noqa: PLC0415

    out = []
    for row in board.rows:
        docs = [row.runs[s] for s in sorted(row.runs, key=str)]
        curves = [d["metrics"].get("batch_errors") for d in docs]
        curve = None  # a curve only from lists of finite numbers (result files are untrusted)
        if curves and all(isinstance(c, list) and c and all(_finite(x) is not None for x in c) for c in curves):
            n = min(len(c) for c in curves)
            curve = [float(x) for x in np.mean([np.asarray(c[:n], dtype=float) for c in curves], axis=0)]
        runs = [Run(seed, d["stream"]["fingerprint"], (d["model"].get("checkpoint_sha256") or "–")[:16],
                    _versions(d.get("versions") or {}),
                    (d.get("_cell") or {}).get("command") or rerun_command((d.get("runtime") or {}).get("config") or {}),
                    float(d["metrics"]["mean_domain_error"]))
                for seed, d in zip(sorted(row.runs, key=str), docs)]
        peak = [v for v in row.values("peak_memory_mb") if _finite(v) is not None]
        out.append(Cell(
            label=row.label, method=row.method, hparams=row.hparams, seeds=sorted(row.runs, key=str),
            seed_errors={r.seed: r.error for r in runs}, mean=row.mean_error, std=row.spread,
            domain_errors={d: row.domain_error(d) for d in board.setting.domains},
            ece=_finite(row.mean("ece")), images_per_s=_finite(row.mean("images_per_s")),
            peak_mb=max(peak) if peak else None, curve=curve, nonfinite=row.collapsed, runs=runs))
    return out


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _archived_cell(row: dict[str, Any], context: dict[str, Any]) -> Cell:
    seeds = list(row["seeds"])
    known = row.get("seed_errors")
    if isinstance(known, dict) and len(known) == len(seeds):  # JSON object keys are strings: match them by text
        by_text = {str(k): float(v) for k, v in known.items()}
        seed_errors = {s: by_text[str(s)] for s in seeds}
    elif len(seeds) == 1:
        seed_errors = {seeds[0]: float(row["mean_error"])}
    else:
        seed_errors = None
    runs = [Run(p["seed"], p.get("fingerprint", ""), p.get("checkpoint", "–"), p.get("versions", ""),
                p.get("command", ""), (seed_errors or {}).get(p["seed"]))
            for p in row.get("provenance", [])]
    curve = row.get("curve")
    return Cell(
        label=variant_label(row["method"], row.get("hparams") or {}, None, context), method=row["method"],
        hparams=row.get("hparams") or {}, seeds=seeds,
        seed_errors=seed_errors,
        mean=float(row["mean_error"]), std=_finite(row.get("mean_error_std")),
        domain_errors={k: float(v) for k, v in row["domain_errors"].items()},
        ece=_finite(row.get("ece")), images_per_s=_finite(row.get("images_per_s")),
        peak_mb=_finite(row.get("peak_memory_mb")),
        curve=[float(x) for x in curve["values"]] if isinstance(curve, dict) else None,
        nonfinite=list(row.get("collapsed") or []), runs=runs, origin="archived report")


def archived_settings(doc: dict[str, Any]) -> dict[str, tuple[dict[str, Any], list[Cell]]]:
    """setting title -> (what the archive says of the setting, its cells) from a ``tta.leaderboard`` JSON."""
    if not isinstance(doc, dict) or doc.get("schema") != "tta.leaderboard" or not isinstance(doc.get("rows"), list):
        raise InputError("not a tta.leaderboard archive (schema 'tta.leaderboard' with rows); pass a leaderboard.json")
    out: dict[str, tuple[dict[str, Any], list[Cell]]] = {}
    for row in doc["rows"]:
        try:
            title = str(row["setting"])
            meta = {"shift": str(_title_value(title, "shift")),
                    "delta": _title_value(title, "delta"), "sorted": "label-sorted" in title,
                    "demo": bool(row.get("demo")), "domains": list(row["domain_errors"]),
                    "boundaries": list(row.get("boundaries") or [])}
            cell = _archived_cell(row, {"dataset": row.get("dataset", "cifar10"), "shift": meta["shift"],
                                        "run_batch_size": _title_value(title, "batch")})
            if not all(map(math.isfinite, [cell.mean, *cell.domain_errors.values()])) or not cell.domain_errors:
                raise ValueError("non-finite or missing error")
            recomputed = statistics.fmean(cell.domain_errors.values())  # linear: mean of seeds = mean of domains
            if abs(recomputed - cell.mean) > 1e-6 * max(1.0, abs(recomputed)):
                raise ValueError(f"mean_error {cell.mean!r} but its domain errors average {recomputed:.6g}")
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"archived row {row.get('label', '?')!r} is malformed ({exc}); "
                             "pass a leaderboard.json written by tta report") from None
        out.setdefault(title, (meta, []))[1].append(cell)
    return out


def read_archive(path: Path) -> dict[str, Any] | None:
    """The ``tta.leaderboard`` JSON at ``path`` (an earlier report), or None when ``path`` is something else."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # load_results names the problem
    if isinstance(doc, dict) and doc.get("schema") == "tta.leaderboard":
        archived_settings(doc)  # malformed rows: one line now, not a traceback later
        return doc
    return None


def _title_value(title: str, key: str) -> Any:
    for part in title.split(" · "):
        if part.startswith(key + " "):
            v = part[len(key) + 1:]
            try:
                return float(v) if "." in v else int(v)
            except ValueError:
                return v
    return None


def pool(a: Cell, b: Cell, where: str) -> Cell:
    """The cell of ``a``'s and ``b``'s seeds together; refused when a per-seed error is unknown or seeds disagree."""
    if a.seed_errors is None or b.seed_errors is None:
        raise InputError(f"{a.label} on {where}: seeds {a.seeds} and {b.seeds} cannot be pooled, as one side is an "
                         "archived mean of several seeds whose per-seed errors are not known; report them apart")
    errs = dict(a.seed_errors)
    for seed, e in b.seed_errors.items():
        if seed in errs and abs(errs[seed] - e) > 1e-6:
            raise InputError(f"{a.label} on {where}, seed {seed}: {e:.4f} % in one source, {errs[seed]:.4f} % in another")
        errs[seed] = e
    na, nb = len(a.seeds), len(b.seeds)
    w = lambda x, y: None if x is None or y is None else (x * na + y * nb) / (na + nb)  # noqa: E731
    curve = None
    if a.curve and b.curve:
        n = min(len(a.curve), len(b.curve))
        curve = list((np.asarray(a.curve[:n]) * na + np.asarray(b.curve[:n]) * nb) / (na + nb))
    vals = list(errs.values())
    runs = {r.seed: r for r in a.runs}
    runs.update({r.seed: r for r in b.runs})
    return Cell(label=a.label, method=a.method, hparams=a.hparams, seeds=sorted(errs, key=str), seed_errors=errs,
                mean=statistics.fmean(vals), std=statistics.stdev(vals) if len(vals) > 1 else None,
                domain_errors={d: w(a.domain_errors[d], b.domain_errors.get(d)) for d in a.domain_errors},
                ece=w(a.ece, b.ece), images_per_s=w(a.images_per_s, b.images_per_s),
                peak_mb=max([x for x in (a.peak_mb, b.peak_mb) if x is not None], default=None), curve=curve,
                nonfinite=a.nonfinite + b.nonfinite, runs=[runs[s] for s in sorted(runs, key=str)],
                origin=a.origin if a.origin == b.origin else f"{a.origin} + {b.origin}")


def short_names(titles: list[str]) -> list[str]:
    """Column names for settings: only the parts of their titles that differ (``continual``, ``mixed · δ=0.1``)."""
    parts = [t.split(" · ") for t in titles]
    common = set(parts[0]).intersection(*parts[1:]) if len(parts) > 1 else set()
    out = []
    for p in parts:
        kept = [x for x in p if x not in common] or [x for x in p if x.startswith("shift ")] or p[:1]
        if not any(x.startswith("shift ") for x in kept):
            kept = [x for x in p if x.startswith("shift ")] + kept
        out.append(" · ".join(x.replace("shift ", "").replace("delta ", "δ=") for x in kept))
    return out


def describe(view: SettingView) -> str:
    """What a setting is, in one sentence for the reader."""
    from ..streams.shifts import SHIFTS  # noqa: PLC0415

    text = SHIFTS.get(view.shift).summary if view.shift in SHIFTS else f"shift {view.shift}"
    if view.delta is not None:
        text += f"; labels in Dirichlet order with δ = {view.delta} (label correlation: batches hold few classes)"
    elif view.sorted:
        text += "; labels sorted by class"
    else:
        text += "; labels in random (i.i.d.) order"
    return text


def _fifths(curve: list[float]) -> tuple[float, float]:
    n = len(curve)
    k = max(1, int(round(n * FIFTH)))
    return float(np.mean(curve[:k])), float(np.mean(curve[-k:]))


def diverges(curve: list[float] | None, source: list[float] | None) -> bool | None:
    """Over the stream's last fifth the method errs > DIVERGE_GAP points more than over its own first fifth, and
    > DIVERGE_GAP points more than source on the same batches. None when either curve is missing.

    Its own first fifth makes this a change over time (a method steadily better or worse than source, as
    per-instance methods are in mixed streams, is not diverging); source on the same batches rules out
    a stream that merely ends on harder domains."""
    if not curve or not source:
        return None
    n = min(len(curve), len(source))
    if n < 5:
        return None
    c0, c1 = _fifths(curve[:n])
    _, s1 = _fifths(source[:n])
    return (c1 - c0) > DIVERGE_GAP and (c1 - s1) > DIVERGE_GAP


def exploits_correlation(deltas_iid: list[float], deltas_correlated: list[float]) -> bool | None:
    """Worse than source by > CORRELATION_MARGIN on i.i.d. labels, better by > CORRELATION_MARGIN under some
    label-correlated setting. None when the board lacks either kind of setting."""
    if not deltas_iid or not deltas_correlated:
        return None
    return max(deltas_iid) > CORRELATION_MARGIN and min(deltas_correlated) < -CORRELATION_MARGIN


def unstable(stds: list[float | None]) -> bool:
    """Sample std over seeds above UNSTABLE_STD points in any setting."""
    return any(s is not None and s > UNSTABLE_STD for s in stds)


def apply_flags(settings: list[SettingView]) -> None:
    """Δ vs source per cell and the flags of each variant (the same flags on every page)."""
    by_label: dict[str, list[tuple[SettingView, Cell]]] = {}
    for view in settings:
        src = view.source
        for c in view.cells:
            c.delta = None if src is None else c.mean - src.mean
            by_label.setdefault(c.label, []).append((view, c))
    for label, pairs in by_label.items():
        flags = []
        if any(c.nonfinite for _, c in pairs):
            flags.append("non-finite")
        iid = [c.delta for v, c in pairs if v.iid and c.delta is not None]
        corr = [c.delta for v, c in pairs if not v.iid and c.delta is not None]
        if exploits_correlation(iid, corr):
            flags.append("exploits label correlation")
        if unstable([c.std for _, c in pairs]):
            flags.append("unstable across seeds")
        if any(diverges(c.curve, v.source.curve if v.source else None) for v, c in pairs
               if c.method != "source"):
            flags.append("diverges over the stream")
        for _, c in pairs:
            c.flags = flags
