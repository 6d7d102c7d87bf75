"""The full-size board's README table: mean error per setting from `tta report` leaderboard.json files, next to
each method's cost ratio and peak memory from a saved `benchmarks/bench_methods.py --memory` Markdown table.

    python benchmarks/board_cost_table.py benchmarks/results/leaderboard-full/leaderboard.json \
        [benchmarks/results/leaderboard-full/cotta/leaderboard.json ...] benchmarks/results/bench_methods_resnet20.md

With several boards, a later board's row replaces an earlier one's of the same method variant and setting
(CoTTA's cells are reported from their own result files, the rest from the main report).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if len(sys.argv) < 3:
    sys.exit("usage: board_cost_table.py LEADERBOARD.json [LEADERBOARD.json ...] BENCH_METHODS.md")
boards = [json.loads(Path(p).read_text()) for p in sys.argv[1:-1]]
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


# rows of one method variant carry one label in every setting (`tent (stats=unmix-tns)`), the bench table's too
table = {}
for board in boards:
    for r in board["rows"]:
        table.setdefault(r["label"], {})[short(r["setting"])] = r
cols = ["continual", "continual δ0.1", "mixed δ0.1"]
order = sorted(table, key=lambda l: (-sum(c in table[l] for c in cols), sum(table[l][c]["mean_error"] for c in cols if c in table[l]) / max(1, sum(c in table[l] for c in cols))))
print("| method | " + " | ".join(cols) + " | seeds | × source forward | peak MiB over source |")
print("|---|" + "---|" * (len(cols) + 3))
for lab in order:
    row = table[lab]
    vals = []
    for c in cols:
        if c in row:
            r = row[c]
            flag = " (non-finite)" if r["collapsed"] else ""
            std = f" ± {r['mean_error_std']:.1f}" if r.get("mean_error_std") else ""
            vals.append(f"{r['mean_error']:.1f}{std}{flag}")
        else:
            vals.append("—")
    seeds = sorted({s for r in row.values() for s in r["seeds"]})
    c, mem = cost.get(lab, ("—", "—"))
    print(f"| {lab} | " + " | ".join(vals) + f" | {','.join(map(str, seeds))} | {c} | {mem} |")
