"""benchmarks/board_cost_table.py: a row's seeds pooled across a leaderboard.json and result files."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from tta.leaderboard import build, render
from tta.results import SCHEMA, SCHEMA_VERSION

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "board_cost_table.py"
BENCH = "| method | threads | × source |\n|---|---|---|\n| cotta | 1 | 69.35x | 0.1 | 1 | 1 (+1340) |\n"


def _doc(seed: int, error: float, delta: float | None = None) -> dict:
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created_utc": f"2026-01-0{seed}",
        "method": {"name": "cotta", "hparams": {"lr": 0.001}},
        "model": {"name": "resnet20", "checkpoint_sha256": "ab" * 32},
        "data": {"label": "cifar10", "dataset": "cifar10", "generated": True, "corruption_seed": 0},
        "stream": {"fingerprint": f"f{seed}", "shift": "continual", "batch_size": 64, "seed": seed, "delta": delta,
                   "severity": 5, "n_examples": 100},
        "metrics": {"mean_domain_error": error, "domain_errors": {"fog@5": error}, "domain_keys": ["fog@5"],
                    "overall_error": error, "ece": 1.0, "images_per_s": 10.0, "collapsed_at": None},
    }


def _table(tmp_path: Path, *sources: Path) -> subprocess.CompletedProcess:
    (tmp_path / "bench.md").write_text(BENCH)
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, sources), str(tmp_path / "bench.md")],
                          capture_output=True, text=True, timeout=120)


def _row(out: str, label: str) -> list[str]:
    return next(line for line in out.splitlines() if line.startswith(f"| {label} |")).strip("|").split("|")


def _write(folder: Path, docs: list[dict]) -> Path:
    folder.mkdir(exist_ok=True)
    for d in docs:
        (folder / f"s{d['stream']['seed']}-{d['stream']['delta']}.json").write_text(json.dumps(d))
    return folder


def test_seeds_of_a_report_row_and_of_result_files_pool_into_one_mean_and_spread(tmp_path) -> None:
    board = tmp_path / "leaderboard.json"
    board.write_text(render(build([_doc(2020, 30.0), _doc(2020, 80.0, 0.1)]), "json"))
    cells = _write(tmp_path / "cells", [_doc(2021, 33.0), _doc(2022, 34.5)])
    out = _table(tmp_path, board, cells)
    assert out.returncode == 0, out.stderr
    row = [c.strip() for c in _row(out.stdout, "cotta")]
    pooled = [30.0, 33.0, 34.5]
    assert row[1] == f"{statistics.fmean(pooled):.1f} ± {statistics.stdev(pooled):.1f}"
    assert row[2] == "80.0"  # the correlated setting has its report seed only
    assert row[4] == "2020,2021,2022" and row[5] == "69.35x" and row[6] == "+1340"


def test_a_rerun_seed_must_agree_with_the_report(tmp_path) -> None:
    board = tmp_path / "leaderboard.json"
    board.write_text(render(build([_doc(2020, 30.0)]), "json"))
    same = _table(tmp_path, board, _write(tmp_path / "same", [_doc(2020, 30.0)]))
    assert same.returncode == 0 and _row(same.stdout, "cotta")[1].strip() == "30.0", same.stderr
    other = _table(tmp_path, board, _write(tmp_path / "other", [_doc(2020, 31.0)]))
    assert other.returncode != 0 and "seed 2020" in other.stderr and "31.0000" in other.stderr


def test_a_row_of_several_seeds_is_not_extended_from_result_files(tmp_path) -> None:
    board = tmp_path / "leaderboard.json"
    board.write_text(render(build([_doc(2020, 30.0), _doc(2021, 32.0)]), "json"))
    out = _table(tmp_path, board, _write(tmp_path / "cells", [_doc(2022, 34.0)]))
    assert out.returncode != 0 and "per-seed errors are not known" in out.stderr
    alone = _table(tmp_path, board)
    assert alone.returncode == 0 and _row(alone.stdout, "cotta")[1].strip() == "31.0 ± 1.4"
