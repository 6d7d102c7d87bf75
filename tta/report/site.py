"""``tta report --html``: a static site of the leaderboard that works offline from its folder.

``index.html`` lists the settings; each ``setting-N.html`` holds the ranked table
(mean ± std over seeds, Δ vs source, per-domain errors as a heatmap, cost as img/s
and as a multiple of the source forward, peak memory), a bar chart with every seed,
the error-over-time curves with domain boundaries and collapses marked, published
reference numbers where the setting matches (marked as published), and the
provenance of every run (stream fingerprint, checkpoint sha, versions, the command
that reruns it). SVG is written inline; the pages load nothing from the network.
"""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..leaderboard import Board, Row, build, render
from ..results import DEMO_BANNER
from .published import matching, source_text
from .svg import bar_chart, error_curves, heat

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
tr.published td{font-style:italic;color:#555;background:#fafafa}
.badge{font-size:10px;border:1px solid #888;border-radius:3px;padding:0 3px;margin-left:4px;font-style:normal}
.demo{background:#fee;border:2px solid #c00;padding:.5em;font-weight:bold}
.warn{background:#fff6d6;padding:.4em}
code{font-size:12px;word-break:break-all}
svg.chart{width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
.collapsed{color:#b00;font-weight:bold}
.scroll{overflow-x:auto}
"""
# A tiny script: any page error is written into the page itself (tests read it back), then the page says it is ready.
_JS = """<script>
window.addEventListener('error', function (e) {
  var box = document.getElementById('js-errors');
  box.textContent += 'Uncaught ' + e.message + '\\n'; box.hidden = false;
});
document.addEventListener('DOMContentLoaded', function () { document.body.setAttribute('data-ready', '1'); });
</script>"""


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style>{_JS}</head>\n'
            f'<body><pre id="js-errors" hidden></pre>\n{body}\n</body></html>\n')


def _fmt(x: float | None, nd: int = 1) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _source_row(board: Board) -> Row | None:
    return next((r for r in board.rows if r.method == "source" and not r.hparams), None) or \
        next((r for r in board.rows if r.method == "source"), None)


def _collapsed(row: Row, source: Row | None) -> bool:
    """Ends the stream (last domain) more than 10 points worse than no adaptation."""
    if source is None or row is source:
        return False
    last = board_last_domain(row)
    return last is not None and row.domain_error(last) > source.domain_error(last) + 10


def board_last_domain(row: Row) -> str | None:
    doc = next(iter(row.runs.values()))
    keys = doc["metrics"].get("domain_keys") or list(doc["metrics"]["domain_errors"])
    return keys[-1] if keys else None


def _curve(row: Row) -> list[float]:
    """Batch errors averaged over seeds (streams of different seeds have the same length)."""
    curves = [d["metrics"]["batch_errors"] for d in row.runs.values()]
    n = min(len(c) for c in curves)
    return list(np.mean([c[:n] for c in curves], axis=0))


def _boundaries(row: Row) -> tuple[list[int], list[str]]:
    doc = next(iter(row.runs.values()))
    m = doc["metrics"]
    dom = np.asarray(m["batch_domains"])
    keys = m.get("domain_keys") or list(m["domain_errors"])
    if doc["stream"]["shift"] == "mixed" or len(dom) == 0:
        return [], ["mixed domains"]
    cuts = [int(b) for b in np.flatnonzero(dom[1:] != dom[:-1]) + 1]
    return cuts, [keys[dom[s]] for s in [0, *cuts]]


def _ranked_table(board: Board, published: list[dict[str, Any]]) -> str:
    st = board.setting
    source = _source_row(board)
    errs = [row.domain_error(d) for row in board.rows for d in st.domains]
    lo, hi = (min(errs), max(errs)) if errs else (0, 100)
    head = ("<tr><th>#</th><th class=l>method</th><th>seeds</th><th>mean ± std</th><th>Δ vs source</th>"
            + "".join(f"<th>{escape(d)}</th>" for d in st.domains)
            + "<th>ECE</th><th>img/s</th><th>× source forward</th><th>peak MB</th></tr>")
    lines = ['<div class="scroll"><table class="ranked">', head]
    for rank, row in enumerate(board.rows, 1):
        mean = row.mean_error
        delta = None if source is None else mean - source.mean_error
        ips = row.mean("images_per_s")
        cost = source.mean("images_per_s") / ips if source is not None and ips > 0 else None
        if row.collapsed:  # the logits became NaN or infinite
            flag = f' <span class="collapsed" title="{escape("; ".join(row.collapsed))}">collapsed (non-finite)</span>'
        elif _collapsed(row, source):
            flag = ' <span class="collapsed" title="last domain >10 points worse than no adaptation">collapsed</span>'
        else:
            flag = ""
        cells = [f"<td>{rank}</td>", f'<td class=l><a href="#prov-{rank}">{escape(row.label)}</a>{flag}</td>',
                 f"<td>{len(row.runs)}</td>",
                 f"<td>{mean:.1f}{' ± ' + format(row.spread, '.1f') if row.spread is not None else ''}</td>",
                 f"<td>{'' if delta is None else format(delta, '+.1f')}</td>"]
        for d in st.domains:
            e = row.domain_error(d)
            cells.append(f'<td class="heat" style="background:{heat(e, lo, hi)}">{e:.1f}</td>')
        cells += [f"<td>{_fmt(row.mean('ece'))}</td>", f"<td>{ips:.0f}</td>", f"<td>{_fmt(cost, 2)}</td>",
                  f"<td>{row.mean('peak_memory_mb'):.0f}</td>"]
        lines.append('<tr class="measured">' + "".join(cells) + "</tr>")
    for e in published:
        blanks = "".join("<td></td>" for _ in st.domains)
        lines.append(
            f'<tr class="published"><td></td><td class=l>{escape(e["published_name"])} ({escape(e["method"])})'
            f'<span class="badge">published</span></td><td>{len(e.get("seeds", []))}</td><td>{e["mean_error"]:.1f}</td>'
            f'<td></td>{blanks}<td></td><td></td><td></td><td></td></tr>')
    lines.append("</table></div>")
    return "\n".join(lines)


def _published_note(published: list[dict[str, Any]], board: Board) -> str:
    if not published:
        return ""
    srcs = sorted({source_text(e) for e in published})
    batches = sorted({e["batch_size"] for e in published})
    note = (f"<p>Rows in <i>italics</i> marked <span class=badge>published</span> are <b>published numbers, not "
            f"measured here</b>: batch size {', '.join(map(str, batches))}, full domains, from "
            + "; ".join(escape(s) for s in srcs) + ".")
    if board.setting.batch_size not in batches or board.setting.n_examples is not None:
        note += (f" The measured rows use batch {board.setting.batch_size}"
                 + (f" and {board.setting.n_examples} images per domain" if board.setting.n_examples else "")
                 + ", so the numbers are comparable only roughly.")
    return note + "</p>"


def _provenance(board: Board) -> str:
    out = ['<div class="scroll"><table class="provenance"><tr><th>#</th><th class=l>method</th><th>seed</th><th class=l>stream</th>'
           '<th class=l>checkpoint sha256</th><th class=l>versions</th><th class=l>command to rerun</th></tr>']
    from ..sweep.cells import rerun_command  # noqa: PLC0415

    for rank, row in enumerate(board.rows, 1):
        for seed, doc in sorted(row.runs.items()):
            v = doc.get("versions", {})
            cmd = (doc.get("_cell") or {}).get("command") or rerun_command(doc.get("runtime", {}).get("config") or {})
            out.append(
                f'<tr id="prov-{rank}"><td>{rank}</td><td class=l>{escape(row.label)}</td><td>{seed}</td>'
                f'<td class=l><code>{escape(doc["stream"]["fingerprint"])}</code></td>'
                f'<td class=l><code>{escape((doc["model"].get("checkpoint_sha256") or "–")[:16])}</code></td>'
                f'<td class=l>tta {escape(v.get("tta", "?"))}, torch {escape(v.get("torch", "?"))}, '
                f'numpy {escape(v.get("numpy", "?"))}, python {escape(v.get("python", "?"))}</td>'
                f'<td class=l><code>{escape(cmd)}</code></td></tr>')
    out.append("</table></div>")
    return "\n".join(out)


def _setting_page(i: int, board: Board, entries: list[dict[str, Any]]) -> str:
    st = board.setting
    any_doc = next(iter(board.rows[0].runs.values()))
    published = matching(entries, any_doc)
    by_method = {e["method"]: e["mean_error"] for e in published}
    body = [f'<p><a href="index.html">← all settings</a></p><h1>{escape(st.title())}</h1>']
    if st.demo:
        body.append(f'<p class="demo">{escape(DEMO_BANNER)}</p>')
    body += [f'<p class="warn">{escape(w)}</p>' for w in board.warnings]
    body.append("<h2>Ranking</h2>")
    body.append("<p>Error % (lower is better), mean over seeds ± sample std. Δ vs source: the difference to no "
                "adaptation. × source forward: wall time per image relative to the source model's forward "
                "(same run settings). Peak MB: " + escape(any_doc["metrics"].get("memory_kind", "")) + ". "
                "<span class=collapsed>collapsed</span>: the last domain ends more than 10 points worse than no "
                "adaptation; <span class=collapsed>collapsed (non-finite)</span>: the logits became NaN or infinite.</p>")
    body.append(_ranked_table(board, published))
    body.append(_published_note(published, board))
    labels = [r.label for r in board.rows]
    body.append("<h2>Mean error and spread over seeds</h2>")
    body.append(bar_chart(labels, [r.mean_error for r in board.rows], [r.values("mean_domain_error") for r in board.rows],
                          [by_method.get(r.method) if not r.hparams or len([x for x in board.rows if x.method == r.method]) == 1
                           else None for r in board.rows], title=st.title()))
    if published:
        body.append("<p>Hollow diamonds: published numbers (see above), not measured here.</p>")
    body.append("<h2>Error over the stream</h2>")
    cuts, names = _boundaries(board.rows[0])
    body.append(error_curves([(r.label, _curve(r)) for r in board.rows], cuts, names, title=st.title(),
                             reference=(_source_row(board).label if _source_row(board) else None)))
    body.append("<p>Dashed verticals: domain boundaries. Dashed curve: no adaptation (source). Thick segments on a "
                "red band: a method more than 10 points worse than no adaptation there (a collapse).</p>")
    body.append("<h2>Provenance</h2>")
    body.append(_provenance(board))
    return _page(st.title(), "\n".join(body))


def write_site(docs: list[dict[str, Any]], outdir: str | Path, published: list[dict[str, Any]] | None = None) -> Path:
    """Write the report for the result documents ``docs`` into ``outdir``; returns the index page."""
    outdir = Path(outdir).expanduser()
    boards = build(docs)
    entries = published or []
    index = ["<h1>tta leaderboard</h1>",
             f"<p>{len(docs)} runs in {len(boards)} settings; generated "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}. Also as "
             '<a href="leaderboard.md">Markdown</a>, <a href="leaderboard.csv">CSV</a>, '
             '<a href="leaderboard.json">JSON</a>.</p>',
             '<table class="settings"><tr><th class=l>setting</th><th>methods</th><th>seeds</th><th class=l>best</th>'
             "<th>published beside</th></tr>"]
    for i, board in enumerate(boards, 1):
        page = f"setting-{i}.html"
        atomic.write_text(outdir / page, _setting_page(i, board, entries))
        best = board.rows[0]
        seeds = sorted({s for r in board.rows for s in r.runs})
        pub = len(matching(entries, next(iter(best.runs.values()))))
        demo = ' <span class="badge">demo</span>' if board.setting.demo else ""
        index.append(f'<tr><td class=l><a href="{page}">{escape(board.setting.title())}</a>{demo}</td>'
                     f"<td>{len(board.rows)}</td><td>{len(seeds)}</td>"
                     f"<td class=l>{escape(best.label)} {best.mean_error:.1f}%</td><td>{pub}</td></tr>")
    index.append("</table>")
    for fmt, name in (("md", "leaderboard.md"), ("csv", "leaderboard.csv"), ("json", "leaderboard.json")):
        atomic.write_text(outdir / name, render(boards, fmt))
    return atomic.write_text(outdir / "index.html", _page("tta leaderboard", "\n".join(index)))


__all__ = ["write_site"]
