"""The full-size board's README table: mean error per setting, next to each method's cost ratio and peak memory
from a saved `benchmarks/bench_methods.py --memory` Markdown table.

    python benchmarks/board_cost_table.py benchmarks/results/leaderboard-full/leaderboard.json \
        [benchmarks/results/leaderboard-full/cells ...] benchmarks/results/bench_methods_resnet20.md

Every argument but the last is a `tta report` leaderboard.json or anything `tta report` reads (result files,
folders of them, stores). A row's seeds are pooled across the sources: a leaderboard row of one seed gives that
seed's error, a result file its own, and a seed found in both must agree (a rerun reproducing the board). The
main report's rows of several seeds are taken as they are; extending one of them from result files is refused,
as its per-seed errors are not in its leaderboard.json.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from tta.leaderboard import build, load_results

if len(sys.argv) < 3:
    sys.exit("usage: board_cost_table.py SOURCE [SOURCE ...] BENCH_METHODS.md")
bench_lines = Path(sys.argv[-1]).read_text().splitlines()
# the file may hold several tables (an idle run, then one with peak memory): each method's ratio comes from the
# first table that has it, its memory from the first that measured memory
ratio, memory = {}, {}
for line in bench_lines:
    if line.startswith("| ") and "x |" in line:
        cells = [c.strip() for c in line.strip("|").split("|")]
        ratio.setdefault(cells[0], cells[2])
        if len(cells) > 5 and "(" in cells[5]:
            memory.setdefault(cells[0], cells[5].split("(")[-1].rstrip(")"))
cost = {k: (v, memory.get(k, "—")) for k, v in ratio.items()}


def short(s):
    return ("mixed" if "shift mixed" in s else "continual") + (" δ0.1" if "delta 0.1" in s else "")


# (label, setting) -> {"seeds": {seed: (error, collapsed)}} or {"pooled": leaderboard row of several seeds};
# rows of one method variant carry one label in every setting (`tent (stats=unmix-tns)`), the bench table's too
cells: dict[tuple[str, str], dict] = {}


def add_seed(label: str, setting: str, seed: int, error: float, collapsed: bool, where: str) -> None:
    cell = cells.setdefault((label, setting), {"seeds": {}})
    if "pooled" in cell:
        sys.exit(f"{label} on {setting}: seed {seed} from {where} would extend a row of several seeds whose "
                 "per-seed errors are not known; report them from result files together")
    old = cell["seeds"].get(seed)
    if old is not None and abs(old[0] - error) > 1e-6:
        sys.exit(f"{label} on {setting}, seed {seed}: {where} has {error:.4f} % but another source {old[0]:.4f} %")
    cell["seeds"][seed] = (error, collapsed)


for source in sys.argv[1:-1]:
    path = Path(source)
    doc = json.loads(path.read_text()) if path.suffix == ".json" and path.is_file() else None
    if isinstance(doc, dict) and doc.get("schema") == "tta.leaderboard":
        for r in doc["rows"]:
            key = (r["label"], short(r["setting"]))
            if len(r["seeds"]) == 1:
                add_seed(*key, r["seeds"][0], r["mean_error"], bool(r["collapsed"]), source)
            elif key in cells:
                sys.exit(f"{key[0]} on {key[1]} appears in two sources and one has several seeds")
            else:
                cells[key] = {"pooled": r}
        continue
    for board in build(load_results([path])):
        for row in board.rows:
            for seed, run in row.runs.items():
                add_seed(row.label, short(board.setting.title()), seed, run["metrics"]["mean_domain_error"],
                         run["metrics"].get("collapsed_at") is not None, source)


def summary(cell: dict) -> tuple[float, float | None, bool, list[int]]:
    if "pooled" in cell:
        r = cell["pooled"]
        return r["mean_error"], r.get("mean_error_std"), bool(r["collapsed"]), r["seeds"]
    errs = [e for e, _ in cell["seeds"].values()]
    std = statistics.stdev(errs) if len(errs) > 1 else None
    return statistics.fmean(errs), std, any(c for _, c in cell["seeds"].values()), sorted(cell["seeds"])


table: dict[str, dict[str, tuple]] = {}
for (label, setting), cell in cells.items():
    table.setdefault(label, {})[setting] = summary(cell)
cols = ["continual", "continual δ0.1", "mixed δ0.1"]
order = sorted(table, key=lambda l: (-sum(c in table[l] for c in cols), sum(table[l][c][0] for c in cols if c in table[l]) / max(1, sum(c in table[l] for c in cols))))
print("| method | " + " | ".join(cols) + " | seeds | × source forward | peak MiB over source |")
print("|---|" + "---|" * (len(cols) + 3))
for lab in order:
    row = table[lab]
    vals = []
    for c in cols:
        if c in row:
            mean, std, collapsed, _ = row[c]
            flag = " (non-finite)" if collapsed else ""
            vals.append(f"{mean:.1f}{f' ± {std:.1f}' if std else ''}{flag}")
        else:
            vals.append("—")
    seeds = sorted({s for v in row.values() for s in v[3]})
    c, mem = cost.get(lab, ("—", "—"))
    print(f"| {lab} | " + " | ".join(vals) + f" | {','.join(map(str, seeds))} | {c} | {mem} |")
