"""The leaderboard: ``tta run`` results side by side, one table per evaluation setting.

A setting is everything that must agree for error rates to be comparable: the
data (named by benchmark, not by the folder it was read from), the model and its checkpoint, the shift, severity, batch size, label
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

from ..errors import InputError
from ..pipeline.results import DEMO_BANNER
from ..pipeline.setting import Setting, setting_of
from ..schema import RESULT_SCHEMA, result_problem
from ..sweep.store import Store, is_store
from .labels import value_text, variant_label

log = logging.getLogger(__name__)

FORMATS = ("md", "csv", "json")



@dataclass
class Row:
    method: str
    hparams: dict[str, Any]
    label: str = ""
    options: dict[str, Any] | None = None  # what the run was asked for (``-O``), when its result records it
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> result document

    def values(self, key: str) -> list[float]:
        return [doc["metrics"][key] for doc in self.runs.values() if doc["metrics"].get(key) is not None]

    def mean(self, key: str) -> float:
        """A metric averaged over the row's seeds (NaN when no seed has it)."""
        vals = self.values(key)
        return statistics.fmean(vals) if vals else float("nan")

    @property
    def collapsed(self) -> list[str]:
        """'seed S at batch B' for every seed whose model collapsed (non-finite logits)."""
        return [f"seed {seed} at batch {doc['metrics']['collapsed_at']['batch']}"
                for seed, doc in sorted(self.runs.items(), key=lambda kv: str(kv[0]))
                if doc["metrics"].get("collapsed_at")]

    def domain_error(self, domain: str) -> float:
        return statistics.fmean(doc["metrics"]["domain_errors"][domain] for doc in self.runs.values())

    @property
    def mean_error(self) -> float:
        return self.mean("mean_domain_error")

    @property
    def spread(self) -> float | None:
        vals = self.values("mean_domain_error")
        return statistics.stdev(vals) if len(vals) > 1 else None


@dataclass
class Board:
    setting: Setting
    rows: list[Row]
    warnings: list[str]


def _result_files(paths: Iterable[str | Path]) -> list[tuple[Path, bool]]:
    """(file, named explicitly) for every path; folders are searched for ``*.json``."""
    out: list[tuple[Path, bool]] = []
    for p in map(Path, paths):
        p = p.expanduser()
        if p.is_dir():
            out += [(f, False) for f in sorted(p.rglob("*.json"))]
            out += [(f, False) for f in sorted(p.rglob("*.db")) if is_store(f)]
        elif p.is_file():
            out.append((p, True))
        else:
            raise InputError(f"{p} does not exist; pass result files or folders written by `tta run --output`")
    return out


def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every ``tta.result`` document under ``paths`` (JSON files, or result stores of ``tta sweep``).

    Other JSON files in folders are skipped."""
    docs = []
    for path, explicit in _result_files(paths):
        if is_store(path):  # a `tta sweep --store` database: every finished cell
            with Store(path, readonly=True) as store:  # reading never writes, so read-only mounts work
                docs += store.documents()
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            if explicit:
                raise InputError(f"cannot read {path} as JSON ({exc}); pass a file written by `tta run`") from None
            log.warning("skipping %s: not readable JSON (%s)", path, exc)
            continue
        if not isinstance(doc, dict) or doc.get("schema") != RESULT_SCHEMA:
            if explicit:
                raise InputError(f"{path} is not a tta result (no schema {RESULT_SCHEMA!r}); pass a file written by `tta run`")
            log.info("skipping %s: not a tta result", path)
            continue
        found = result_problem(doc)  # the one schema (tta.schema): types, finite numbers, domains, their mean
        problem = f"{found}; rerun it with `tta run` or remove it" if found else None
        if problem:
            if explicit:
                raise InputError(f"{path}: {problem}")
            log.warning("skipping %s: %s", path, problem)
            continue
        doc["_path"] = str(path)
        docs.append(doc)
    return docs


def _row_hparams(doc: dict[str, Any]) -> dict[str, Any]:
    """The resolved hyperparameters that make a row, less a ``seed`` that is the run's own seed.

    Methods with random draws of their own (RoTTA, NOTE, CoTTA, ROID, DeYO, EATA) take their
    seed from the run's by default; kept in the row's key, it would split every seed into a row
    of its own instead of averaging them.
    """
    hp = dict(doc["method"]["hparams"])
    if "seed" in hp and hp["seed"] == doc["stream"]["seed"]:
        del hp["seed"]
    return hp


def _requested_options(doc: dict[str, Any]) -> dict[str, Any] | None:
    config = (doc.get("runtime") or {}).get("config")
    options = config.get("options") if isinstance(config, dict) else None
    return options if isinstance(options, dict) else None


def _context(doc: dict[str, Any]) -> dict[str, Any]:
    """What a method's defaults depend on, for its label."""
    return {"dataset": doc["data"].get("dataset"), "shift": doc["stream"].get("shift"),
            "run_batch_size": doc["stream"].get("batch_size")}


def _labels(rows: list[Row]) -> None:
    """One short label per row (``tta.report.labels.variant_label``): the same variant reads the same everywhere.

    Rows that still share a label (options the label leaves out) get the resolved hyperparameters
    that differ between them appended, flattened.
    """
    for row in rows:
        doc = next(iter(row.runs.values()))
        row.label = variant_label(row.method, row.hparams, row.options, _context(doc))
    by_label: dict[str, list[Row]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    for label, group in by_label.items():
        if len(group) == 1:
            continue
        keys = sorted({k for r in group for k in r.hparams})
        differing = [k for k in keys if len({json.dumps(r.hparams.get(k), sort_keys=True, default=str)
                                             for r in group}) > 1]
        for r in group:
            r.label = " ".join([label, *(f"{k}={value_text(r.hparams.get(k))}" for k in differing)])


def _order_print(stream: dict[str, Any]) -> str | None:
    """The fingerprint of a result's sample order: recorded as ``order_fingerprint`` since the stream
    fingerprint also covers the data; a result written before that has no data digest, and its fingerprint
    was the order's alone."""
    order = stream.get("order_fingerprint")
    if order is None and stream.get("data_digest") is None:
        order = stream.get("fingerprint")
    return str(order) if order is not None else None


def build(docs: Iterable[dict[str, Any]]) -> list[Board]:
    """Group results into boards, rows sorted by mean error (best first)."""
    grouped: dict[Setting, dict[str, Row]] = {}
    warnings: dict[Setting, list[str]] = {}
    for doc in sorted(docs, key=lambda d: d.get("created_utc", "")):
        setting = setting_of(doc)
        hp = _row_hparams(doc)
        key = doc["method"]["name"] + json.dumps(hp, sort_keys=True, default=str)
        row = grouped.setdefault(setting, {}).setdefault(key, Row(doc["method"]["name"], hp))
        row.options = _requested_options(doc)
        seed = doc["stream"]["seed"]
        if seed in row.runs:
            warnings.setdefault(setting, []).append(
                f"{doc['method']['name']} seed {seed} appears twice; kept the newer {doc.get('_path', '')}"
            )
        row.runs[seed] = doc
    boards = []
    for setting, rows_by_key in grouped.items():
        rows = sorted(rows_by_key.values(), key=lambda r: r.mean_error)
        _labels(rows)
        notes = warnings.get(setting, [])
        seeds = sorted({s for r in rows for s in r.runs})
        for seed in seeds:
            streams = [r.runs[seed]["stream"] for r in rows if seed in r.runs]
            prints = {st["fingerprint"] for st in streams}
            if len(prints) <= 1:
                continue
            orders = {_order_print(st) for st in streams}
            digests = {st.get("data_digest") for st in streams} - {None}
            if len(orders) == 1 and None not in orders and len(digests) <= 1:
                notes.append(
                    f"seed {seed}: the rows saw the same sample order (order fingerprint {orders.pop()}); their "
                    f"fingerprints ({', '.join(sorted(prints))}) differ because some results predate the data "
                    "digest, so those rows' images are not proven the same"
                )
            else:
                notes.append(
                    f"seed {seed}: the rows saw different streams (fingerprints {', '.join(sorted(prints))}); "
                    "their errors are not comparable"
                )
        boards.append(Board(setting, rows, notes))
    return sorted(boards, key=lambda b: (b.setting.demo, b.setting.data, b.setting.model, b.setting.shift))


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def to_markdown(boards: list[Board]) -> str:
    """The boards as Markdown tables (every value escaped by the template: labels and options are untrusted)."""
    from .render import render as render_template  # noqa: PLC0415  (jinja2 only when Markdown is asked for)

    ctx = []
    for board in boards:
        st = board.setting
        rows = [{"rank": rank, "label": row.label, "collapsed": "; ".join(row.collapsed),
                 "seeds": ",".join(map(str, sorted(row.runs, key=str))),
                 "domain_errors": [row.domain_error(d) for d in st.domains], "mean": row.mean_error,
                 "spread": row.spread, "ece": row.mean("ece"), "ips": row.mean("images_per_s")}
                for rank, row in enumerate(board.rows, 1)]
        ctx.append({"title": st.title(), "demo": st.demo, "banner": DEMO_BANNER, "warnings": board.warnings,
                    "domains": st.domains, "rows": rows, "any_collapsed": any(r.collapsed for r in board.rows),
                    "fingerprints": ", ".join(sorted({doc["stream"]["fingerprint"] for r in board.rows
                                                      for doc in r.runs.values()}))})
    return render_template("leaderboard.md.j2", boards=ctx).strip() + "\n"


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
                "ece": row.mean("ece"),
                "collapsed": row.collapsed,
                "images_per_s": row.mean("images_per_s"),
                "files": [d.get("_path", "") for d in row.runs.values()],
                "data": sorted({d["data"]["label"] for d in row.runs.values()}),
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
