"""Keep what an old `tta report` site holds when its result files are gone: one tta.leaderboard JSON per board.

    python benchmarks/archive_report.py OLD_SITE_FOLDER ARCHIVE.json

Reads the site's leaderboard.json (per row: seeds, mean and std over them, per-domain means, ECE, img/s,
fingerprints, hyperparameters) and adds, from its setting pages, what only the HTML kept: each seed's
provenance line (fingerprint, checkpoint sha, versions, command), the row's peak MB, and its error curve.
The curves are *digitized* from the pages' SVG polylines: they are the old report's running mean over 5
batches of the seed-averaged batch errors, in SVG units of 0.1 px = 0.038 error points, so recovered to
about ±0.02 points; the archive says so per curve (``"digitized": true, "smoothed_window": 5``).
The board's numbers (means, stds, domain errors) come from the JSON, exactly as the old report wrote them.
"""
from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

# geometry of the old report's curve chart (tta/report/svg.py before the small multiples)
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 900, 360, 48, 150, 60, 36


def _error(y: float) -> float:
    return round(100 * (1 - (y - TOP) / (HEIGHT - TOP - BOTTOM)), 2)


def _page(text: str) -> dict:
    title = html.unescape(re.search(r"<h1>(.*?)</h1>", text, re.S).group(1))
    curves = {}
    for pts, label in re.findall(r'<polyline class="curve" points="([^"]*)"[^>]*><title>(.*?)</title>', text):
        ys = [float(p.split(",")[1]) for p in pts.split()]
        curves[html.unescape(label)] = [_error(y) for y in ys]
    n = max((len(c) for c in curves.values()), default=1)
    xs = [float(x) for x in re.findall(r'class="boundary" x1="([\d.]+)"', text)]
    cuts = [int(round((x - LEFT) / (WIDTH - LEFT - RIGHT) * (n - 1) + 0.5)) for x in xs]
    prov: dict[str, list] = {}
    for label, seed, fp, sha, versions, cmd in re.findall(
            r'<tr id="prov-\d+"><td>\d+</td><td class=l>(.*?)</td><td>(.*?)</td><td class=l><code>(.*?)</code></td>'
            r'<td class=l><code>(.*?)</code></td><td class=l>(.*?)</td><td class=l><code>(.*?)</code></td></tr>', text):
        prov.setdefault(html.unescape(label), []).append(
            {"seed": int(seed) if seed.lstrip("-").isdigit() else html.unescape(seed), "fingerprint": html.unescape(fp),
             "checkpoint": html.unescape(sha), "versions": html.unescape(versions), "command": html.unescape(cmd)})
    peak = {}
    for label, last in re.findall(r'<tr class="measured">.*?<a href="#prov-\d+">(.*?)</a>.*<td>([\d.]+)</td></tr>', text):
        peak[html.unescape(label)] = float(last)
    return {"title": title, "curves": curves, "cuts": cuts, "provenance": prov, "peak": peak}


def main(site: Path, out: Path) -> None:
    board = json.loads((site / "leaderboard.json").read_text())
    pages = {p["title"]: p for p in (_page(f.read_text()) for f in sorted(site.glob("setting-*.html")))}
    rows = []
    for row in board["rows"]:
        page = pages[row["setting"]]
        label = row["label"]
        row = {k: v for k, v in row.items() if k not in ("files", "warnings", "rank")}
        row["dataset"] = "cifar10" if row["setting"].startswith("CIFAR-10-C") else row.get("dataset")
        row["provenance"] = page["provenance"].get(label, [])
        if sorted(p["seed"] for p in row["provenance"]) != sorted(row["seeds"]):
            sys.exit(f"{label} on {row['setting']}: provenance seeds {row['provenance']} != {row['seeds']}")
        row["peak_memory_mb"] = page["peak"].get(label)
        if label in page["curves"]:
            row["curve"] = {"values": page["curves"][label], "digitized": True, "smoothed_window": 5,
                            "precision_points": 0.04}
        row["boundaries"] = page["cuts"]
        rows.append(row)
    out.write_text(json.dumps({"schema": "tta.leaderboard", "schema_version": 1, "archived_from": str(site),
                               "note": __doc__.split("\n\n")[2].replace("\n", " "), "rows": rows}) + "\n")
    print(f"{len(rows)} rows, {sum('curve' in r for r in rows)} with curves -> {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
