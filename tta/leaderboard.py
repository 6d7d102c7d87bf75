"""The leaderboard: ``tta run`` results side by side, one table per evaluation setting.

A setting is everything that must agree for error rates to be comparable: the
data, the model and its checkpoint, the shift, severity, batch size, label
correlation, subsample size and domain list. Within a setting each method (with
its hyperparameters) is one row; several seeds of a row are averaged and their
spread is shown. Rows that share a seed must have seen the same stream, which
the stream fingerprint proves; a mismatch is reported above the table.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import InputError
from .results import DEMO_BANNER, SCHEMA

log = logging.getLogger(__name__)

FORMATS = ("md", "csv", "json")


@dataclass(frozen=True)
class Setting:
    """What must agree for two results to share a table."""

    data: str
    model: str
    shift: str
    severity: Any
    batch_size: int
    delta: Any
    sorted: bool
    n_examples: Any
    domains: tuple[str, ...]
    demo: bool

    def title(self) -> str:
        parts = [self.data, self.model, f"shift {self.shift}", f"severity {self.severity}", f"batch {self.batch_size}"]
        if self.delta is not None:
            parts.append(f"delta {self.delta}")
        if self.sorted:
            parts.append("label-sorted")
        if self.n_examples is not None:
            parts.append(f"{self.n_examples} images per domain")
        return " · ".join(str(p) for p in parts)


@dataclass
class Row:
    method: str
    hparams: dict[str, Any]
    label: str = ""
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> result document

    def values(self, key: str) -> list[float]:
        return [doc["metrics"][key] for doc in self.runs.values()]

    def domain_error(self, domain: str) -> float:
        return statistics.fmean(doc["metrics"]["domain_errors"][domain] for doc in self.runs.values())

    @property
    def mean_error(self) -> float:
        return statistics.fmean(self.values("mean_domain_error"))

    @property
    def spread(self) -> float | None:
        vals = self.values("mean_domain_error")
        return statistics.stdev(vals) if len(vals) > 1 else None


@dataclass
class Board:
    setting: Setting
    rows: list[Row]
    warnings: list[str]


def _setting(doc: dict[str, Any]) -> Setting:
    s, m, model = doc["stream"], doc["metrics"], doc["model"]
    sha = (model.get("checkpoint_sha256") or "")[:12]
    name = model["name"] + (f"+{model['norm']}" if model.get("norm") not in (None, "bn") else "")
    return Setting(
        data=doc["data"]["label"],
        model=f"{name} ({sha})" if sha else name,
        shift=s["shift"],
        severity=s.get("severity"),
        batch_size=s["batch_size"],
        delta=s.get("delta"),
        sorted=bool(s.get("sorted")),
        n_examples=s.get("n_examples"),
        domains=tuple(m.get("domain_keys") or m["domain_errors"]),
        demo=bool(doc.get("demo")),
    )


def _result_files(paths: Iterable[str | Path]) -> list[tuple[Path, bool]]:
    """(file, named explicitly) for every path; folders are searched for ``*.json``."""
    out: list[tuple[Path, bool]] = []
    for p in map(Path, paths):
        p = p.expanduser()
        if p.is_dir():
            out += [(f, False) for f in sorted(p.rglob("*.json"))]
        elif p.is_file():
            out.append((p, True))
        else:
            raise InputError(f"{p} does not exist; pass result files or folders written by `tta run --output`")
    return out


def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every ``tta.result`` document under ``paths``; other JSON files in folders are skipped."""
    docs = []
    for path, explicit in _result_files(paths):
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            if explicit:
                raise InputError(f"cannot read {path} as JSON ({exc}); pass a file written by `tta run`") from None
            log.warning("skipping %s: not readable JSON (%s)", path, exc)
            continue
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            if explicit:
                raise InputError(f"{path} is not a tta result (no schema {SCHEMA!r}); pass a file written by `tta run`")
            log.info("skipping %s: not a tta result", path)
            continue
        doc["_path"] = str(path)
        docs.append(doc)
    return docs


def _labels(rows: list[Row]) -> None:
    """Method name, plus the hyperparameters that tell apart rows sharing that name."""
    by_name: dict[str, list[Row]] = {}
    for row in rows:
        by_name.setdefault(row.method, []).append(row)
    for name, group in by_name.items():
        if len(group) == 1:
            group[0].label = name
            continue
        keys = sorted({k for r in group for k in r.hparams})
        differing = [k for k in keys if len({json.dumps(r.hparams.get(k), sort_keys=True) for r in group}) > 1]
        for r in group:
            r.label = f"{name} ({', '.join(f'{k}={r.hparams.get(k)}' for k in differing)})"


def build(docs: Iterable[dict[str, Any]]) -> list[Board]:
    """Group results into boards, rows sorted by mean error (best first)."""
    grouped: dict[Setting, dict[str, Row]] = {}
    warnings: dict[Setting, list[str]] = {}
    for doc in sorted(docs, key=lambda d: d.get("created_utc", "")):
        setting = _setting(doc)
        hp = doc["method"]["hparams"]
        key = doc["method"]["name"] + json.dumps(hp, sort_keys=True, default=str)
        row = grouped.setdefault(setting, {}).setdefault(key, Row(doc["method"]["name"], hp))
        seed = doc["stream"]["seed"]
        if seed in row.runs:
            warnings.setdefault(setting, []).append(
                f"{doc['method']['name']} seed {seed} appears twice; kept the newer {doc['_path']}"
            )
        row.runs[seed] = doc
    boards = []
    for setting, rows_by_key in grouped.items():
        rows = sorted(rows_by_key.values(), key=lambda r: r.mean_error)
        _labels(rows)
        notes = warnings.get(setting, [])
        seeds = sorted({s for r in rows for s in r.runs})
        for seed in seeds:
            prints = {r.runs[seed]["stream"]["fingerprint"] for r in rows if seed in r.runs}
            if len(prints) > 1:
                notes.append(
                    f"seed {seed}: the rows saw different streams (fingerprints {', '.join(sorted(prints))}); "
                    "their errors are not comparable"
                )
        boards.append(Board(setting, rows, notes))
    return sorted(boards, key=lambda b: (b.setting.demo, b.setting.data, b.setting.model, b.setting.shift))


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def to_markdown(boards: list[Board]) -> str:
    out: list[str] = []
    for board in boards:
        st = board.setting
        out.append(f"### {st.title()}")
        out.append("")
        if st.demo:
            out += [f"**{DEMO_BANNER}**", ""]
        out += [f"> {w}" for w in board.warnings] + ([""] if board.warnings else [])
        out.append("| # | method | seeds | " + " | ".join(st.domains) + " | mean | ECE | img/s |")
        out.append("|---|---|---|" + "---|" * (len(st.domains) + 3))
        for rank, row in enumerate(board.rows, 1):
            mean = _fmt(row.mean_error) + (f" ± {row.spread:.1f}" if row.spread is not None else "")
            cells = [str(rank), row.label, ",".join(map(str, sorted(row.runs)))]
            cells += [_fmt(row.domain_error(d)) for d in st.domains]
            cells += [mean, _fmt(statistics.fmean(row.values("ece"))), f"{statistics.fmean(row.values('images_per_s')):.0f}"]
            out.append("| " + " | ".join(cells) + " |")
        fingerprints = sorted({doc["stream"]["fingerprint"] for r in board.rows for doc in r.runs.values()})
        out += ["", f"Error % (lower is better), mean over seeds (± sample std of the mean error). "
                    f"Streams: {', '.join(fingerprints)}.", ""]
    return "\n".join(out).rstrip() + "\n"


def _records(boards: list[Board]) -> list[dict[str, Any]]:
    recs = []
    for board in boards:
        st = board.setting
        for rank, row in enumerate(board.rows, 1):
            recs.append({
                "setting": st.title(), "demo": st.demo, "rank": rank, "method": row.method, "label": row.label,
                "hparams": row.hparams, "seeds": sorted(row.runs),
                "fingerprints": sorted({d["stream"]["fingerprint"] for d in row.runs.values()}),
                "mean_error": row.mean_error, "mean_error_std": row.spread,
                "domain_errors": {d: row.domain_error(d) for d in st.domains},
                "ece": statistics.fmean(row.values("ece")),
                "images_per_s": statistics.fmean(row.values("images_per_s")),
                "files": [d["_path"] for d in row.runs.values()],
                "warnings": board.warnings,
            })
    return recs


def to_csv(boards: list[Board]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["setting", "rank", "method", "seeds", "domain", "error"])
    for rec in _records(boards):
        seeds = " ".join(map(str, rec["seeds"]))
        for domain, err in rec["domain_errors"].items():
            writer.writerow([rec["setting"], rec["rank"], rec["label"], seeds, domain, f"{err:.4f}"])
        writer.writerow([rec["setting"], rec["rank"], rec["label"], seeds, "mean", f"{rec['mean_error']:.4f}"])
    return buf.getvalue()


def render(boards: list[Board], fmt: str = "md") -> str:
    """The boards as Markdown, long-format CSV or JSON."""
    if fmt == "md":
        return to_markdown(boards)
    if fmt == "csv":
        return to_csv(boards)
    if fmt == "json":
        return json.dumps({"schema": "tta.leaderboard", "schema_version": 1, "rows": _records(boards)}, indent=2) + "\n"
    raise InputError(f"unknown leaderboard format {fmt!r}; choose one of: {', '.join(FORMATS)}")
