"""``tta report``: a static site of the leaderboard that works offline from its folder.

``index.html`` is the summary: variants × settings (mean ± std over seeds, rank, best marked), the worst
Δ vs source over all settings, cost, and flags by rules the page states; sortable by any column.
Each ``setting-N.html`` holds the ranked table (mean, std, Δ vs source, cost, peak memory), the per-domain
heatmap, a bar chart with every seed, the error over the stream as small multiples, published reference
numbers where the setting matches (marked as published), and each row's provenance folded. Pages are
Jinja2 templates with autoescape; charts are inline SVG; nothing is loaded from the network. The
Markdown/CSV/JSON written beside the pages come from the same numbers and labels.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..pipeline.results import DEMO_BANNER
from . import view as V
from .cost import Cost, from_bench, from_runs
from .leaderboard import build
from .published import matching, source_text
from .render import render
from .svg import bar_chart, heat, small_multiples


def _boundaries(doc: dict[str, Any]) -> list[int]:
    m = doc["metrics"]
    dom = np.asarray(m.get("batch_domains") or [])
    if doc["stream"]["shift"] == "mixed" or len(dom) < 2:
        return []
    return [int(b) for b in np.flatnonzero(dom[1:] != dom[:-1]) + 1]


def build_views(docs: list[dict[str, Any]], archives: list[dict[str, Any]] | None = None) -> list[V.SettingView]:
    """One view per setting: result documents grouped by ``tta.report.leaderboard``, archived rows pooled in by label."""
    views: dict[str, V.SettingView] = {}
    for board in build(docs):
        st = board.setting
        any_doc = next(iter(board.rows[0].runs.values()))
        views[st.title()] = V.SettingView(
            title=st.title(), short="", setting=st, domains=list(st.domains), shift=st.shift, delta=st.delta,
            sorted=st.sorted, demo=st.demo, cells=V.cells_from_board(board), warnings=list(board.warnings),
            boundaries=_boundaries(any_doc), memory_kind=str(any_doc["metrics"].get("memory_kind", "")),
            any_doc=any_doc)
    for archive in archives or []:
        for title, (meta, cells) in V.archived_settings(archive).items():
            view = views.get(title)
            if view is None:
                view = views[title] = V.SettingView(
                    title=title, short="", setting=None, domains=meta["domains"], shift=meta["shift"],
                    delta=meta["delta"], sorted=meta["sorted"], demo=meta["demo"], cells=[], warnings=[],
                    boundaries=meta["boundaries"])
            by_label = {c.label: i for i, c in enumerate(view.cells)}
            for cell in cells:
                if cell.label in by_label:
                    i = by_label[cell.label]
                    view.cells[i] = V.pool(cell, view.cells[i], title)
                else:
                    by_label[cell.label] = len(view.cells)
                    view.cells.append(cell)
    ordered = sorted(views.values(), key=lambda v: (v.demo, v.shift != "continual", v.shift,
                                                    v.delta is not None, v.delta or 0, v.title))
    for v, name in zip(ordered, V.short_names([v.title for v in ordered])):
        v.short = name
        v.cells.sort(key=lambda c: c.mean)
    V.apply_flags(ordered)
    return ordered


def _about(method: str) -> str:
    """What the method is and where it was published, from the registry ('' for a method tta does not know)."""
    try:
        from ..methods import get_method  # noqa: PLC0415

        recipe = get_method(method)
    except Exception:  # noqa: BLE001  a result of a method this tta does not register
        return ""
    return recipe.summary + ("" if recipe.paper in ("", "-") else f" ({recipe.paper})")


def _summary_rows(views: list[V.SettingView], costs: dict[str, Cost]) -> list[dict[str, Any]]:
    labels: dict[str, dict[int, V.Cell]] = {}
    for k, v in enumerate(views):
        for c in v.cells:
            labels.setdefault(c.label, {})[k] = c
    ranks = [{c.label: r for r, c in enumerate(v.cells, 1)} for v in views]
    rows = []
    for label, by_k in labels.items():
        deltas = [c.delta for c in by_k.values() if c.delta is not None]
        any_cell = next(iter(by_k.values()))
        cost = costs.get(label, Cost(None, None))
        rows.append({"label": label, "flags": any_cell.flags, "about": _about(any_cell.method), "complete": len(by_k) == len(views),
                     "mean_all": statistics.fmean(c.mean for c in by_k.values()),
                     "cells": [None if k not in by_k else {"mean": by_k[k].mean, "std": by_k[k].std,
                                                            "rank": ranks[k][label], "best": ranks[k][label] == 1,
                                                            "seeds": len(by_k[k].seeds)} for k in range(len(views))],
                     "worst": max(deltas) if deltas else None, "ratio": cost.ratio, "peak_memory": cost.peak_memory})
    rows.sort(key=lambda r: (not r["complete"], r["mean_all"]))
    return rows


def _provenance(cell: V.Cell) -> dict[str, Any]:
    return {"label": cell.label, "about": _about(cell.method), "origin": cell.origin, "hparams": json.dumps(cell.hparams, sort_keys=True, default=str),
            "runs": cell.runs}


def _setting_context(i: int, view: V.SettingView, costs: dict[str, Cost], entries: list[dict[str, Any]]) -> dict:
    published = matching(entries, view.any_doc) if view.any_doc is not None else []
    errs = [e for c in view.cells for e in c.domain_errors.values() if e is not None]
    lo, hi = (min(errs), max(errs)) if errs else (0.0, 100.0)
    rows = []
    for rank, c in enumerate(view.cells, 1):
        cost = costs.get(c.label, Cost(None, None))
        worst = max(c.domain_errors, key=lambda d: c.domain_errors[d]) if c.domain_errors else ""
        rows.append({"rank": rank, "label": c.label, "about": _about(c.method), "seeds": len(c.seeds), "mean": c.mean, "std": c.std,
                     "delta": c.delta, "ece": c.ece, "ratio": cost.ratio, "peak_memory": cost.peak_memory, "flags": c.flags,
                     "nonfinite": "; ".join(c.nonfinite), "worst_domain": worst,
                     "heat": [{"v": c.domain_errors.get(d), "style": heat(c.domain_errors[d], lo, hi)}
                              for d in view.domains]})
    by_method = {e["method"]: e["mean_error"] for e in published}
    once = {c.method for c in view.cells if sum(x.method == c.method for x in view.cells) == 1}
    bars = bar_chart([c.label for c in view.cells], [c.mean for c in view.cells], [c.std for c in view.cells],
                     [list(c.seed_errors.values()) if c.seed_errors else [] for c in view.cells],
                     [by_method.get(c.method) if c.method in once else None for c in view.cells], title=view.title)
    src = view.source
    multiples = small_multiples([(c.label, c.curve) for c in view.cells if c is not src],
                                src.curve if src else None, view.boundaries, title=view.title)
    note = ""
    if published:
        batches = sorted({e["batch_size"] for e in published})
        note = {"sources": sorted({source_text(e) for e in published}), "batches": ", ".join(map(str, batches)),
                "rough": view.setting is not None and (view.setting.batch_size not in batches
                                                       or view.setting.n_examples is not None)}
    return {"i": i, "view": view, "rows": rows, "published": published, "published_note": note, "bars": bars,
            "multiples": multiples, "has_curves": any(c.curve for c in view.cells),
            "provenance": [_provenance(c) for c in view.cells], "banner": DEMO_BANNER,
            "description": V.describe(view), "origins": sorted({c.origin for c in view.cells})}


def _csv(views: list[V.SettingView]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["setting", "rank", "method", "seeds", "domain", "error"])
    for v in views:
        for rank, c in enumerate(v.cells, 1):
            seeds = " ".join(map(str, c.seeds))
            for d, e in c.domain_errors.items():
                w.writerow([v.title, rank, c.label, seeds, d, f"{e:.4f}"])
            w.writerow([v.title, rank, c.label, seeds, "mean", f"{c.mean:.4f}"])
    return buf.getvalue()


def _json(views: list[V.SettingView]) -> str:
    rows = []
    for v in views:
        for rank, c in enumerate(v.cells, 1):
            rows.append({"setting": v.title, "demo": v.demo, "rank": rank, "method": c.method, "label": c.label,
                         "hparams": c.hparams, "seeds": c.seeds, "seed_errors": c.seed_errors,
                         "fingerprints": sorted({r.fingerprint for r in c.runs}), "mean_error": c.mean,
                         "mean_error_std": c.std, "delta_vs_source": c.delta, "domain_errors": c.domain_errors,
                         "ece": c.ece, "collapsed": c.nonfinite, "images_per_s": c.images_per_s,
                         "peak_memory_mb": c.peak_mb, "flags": c.flags, "origin": c.origin,
                         "provenance": [r.__dict__ for r in c.runs], "warnings": v.warnings})
    return json.dumps({"schema": "tta.leaderboard", "schema_version": 1, "rows": rows}, indent=1, default=str) + "\n"


def write_site(docs: list[dict[str, Any]], outdir: str | Path, published: list[dict[str, Any]] | None = None, *,
               archives: list[dict[str, Any]] | None = None, cost_file: str | Path | None = None) -> Path:
    """Write the report of result documents ``docs`` (and archived reports) into ``outdir``; returns the index."""
    outdir = Path(outdir).expanduser()
    views = build_views(docs, archives)
    costs, cost_text = from_bench(cost_file) if cost_file else from_runs(views)
    entries = published or []
    pages = []
    for i, view in enumerate(views, 1):
        ctx = _setting_context(i, view, costs, entries)
        atomic.write_text(outdir / f"setting-{i}.html", render("setting.html.j2", cost_text=cost_text,
                                                               settings=views, **ctx))
        pages.append({"page": f"setting-{i}.html", "view": view, "description": ctx["description"],
                      "published": len(ctx["published"]), "rows": ctx["rows"]})
    rows = _summary_rows(views, costs)
    n_runs = sum(len(c.seeds) for v in views for c in v.cells)
    origins = sorted({c.origin for v in views for c in v.cells})
    common = dict(views=views, pages=pages, rows=rows, cost_text=cost_text, n_runs=n_runs, origins=origins,
                  badges=V.FLAG_BADGES, thresholds={"unstable": V.UNSTABLE_STD, "corr": V.CORRELATION_MARGIN, "gap": V.DIVERGE_GAP,
                              "fifth": int(V.FIFTH * 100)},
                  generated=datetime.now(timezone.utc).isoformat(timespec="seconds"), banner=DEMO_BANNER)
    atomic.write_text(outdir / "leaderboard.md", render("report.md.j2", **common))
    atomic.write_text(outdir / "leaderboard.csv", _csv(views))
    atomic.write_text(outdir / "leaderboard.json", _json(views))
    return atomic.write_text(outdir / "index.html", render("index.html.j2", **common))


__all__ = ["build_views", "write_site"]
