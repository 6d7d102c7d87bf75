"""Run a grid of methods x shifts x seeds with `tta run`, then render the leaderboard.

Each run is its own `python -m tta run` process writing one result file; a file that
already exists is skipped, and an interrupted run resumes from its `.partial.pt`, so
rerunning the same command continues the grid. Example (ResNet-20 on a CIFAR-10-C
folder generated with `tta corrupt`, 2,000 images per domain, 1 thread):

    tta corrupt --src ../shared/data/cifar10/test_images.npy --out /tmp/c10c/CIFAR-10-C \
        --severities 5 --workers 2 --frost-dir ../shared/data/frost
    OMP_NUM_THREADS=1 python benchmarks/leaderboard_grid.py --data-dir /tmp/c10c \
        --model resnet20 --checkpoint ../shared/models/cifar10/resnet20.th \
        --n-examples 2000 --out-dir benchmarks/results/leaderboard_resnet20
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_METHODS = ["source", "tbn", "tbn-ema", "alpha-bn", "unmix-tns", "adab2n", "momentum-decay", "tent",
                   "alpha-bn-mcc"]
# a shift, optionally with Dirichlet label correlation: "continual" or "continual@0.1"
DEFAULT_SHIFTS = ["continual", "continual@0.1"]


def _shift_args(shift: str) -> tuple[list[str], str]:
    name, _, delta = shift.partition("@")
    args = ["--shift", name] + (["--delta", delta] if delta else [])
    return args, name + (f"-delta{delta}" if delta else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--model", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--methods", nargs="*", default=DEFAULT_METHODS)
    ap.add_argument("--shifts", nargs="*", default=DEFAULT_SHIFTS, help="e.g. iid continual mixed continual@0.1")
    ap.add_argument("--seeds", nargs="*", type=int, default=[2020])
    ap.add_argument("--n-examples", type=int, default=None, help="images per domain (all when omitted)")
    ap.add_argument("--severity", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--board", default=None, help="leaderboard file (default: <out-dir>/LEADERBOARD.md)")
    args = ap.parse_args()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = ["--dataset", args.dataset, "--data-dir", args.data_dir, "--severity", str(args.severity),
              "--threads", str(args.threads), "-q"]
    if args.model:
        common += ["--model", args.model]
    if args.checkpoint:
        common += ["--checkpoint", args.checkpoint]
    if args.n_examples:
        common += ["--n-examples", str(args.n_examples)]
    grid = [(m, s, seed) for s in args.shifts for m in args.methods for seed in args.seeds]
    for i, (method, shift, seed) in enumerate(grid, 1):
        shift_args, shift_tag = _shift_args(shift)
        out = out_dir / f"{args.dataset}-{method}-{shift_tag}-s{seed}.json"
        if out.exists():
            print(f"[{i}/{len(grid)}] {out.name}: done earlier, kept")
            continue
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "tta", "run", "--method", method, *shift_args, "--seed", str(seed),
               "--output", str(out), *common]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"[{i}/{len(grid)}] {out.name}: FAILED\n{proc.stderr.strip()}", file=sys.stderr)
            continue
        print(f"[{i}/{len(grid)}] {out.name}: {time.perf_counter() - t0:.0f} s")
    board = Path(args.board) if args.board else out_dir / "LEADERBOARD.md"
    subprocess.run([sys.executable, "-m", "tta", "leaderboard", str(out_dir), "--output", str(board)], check=True)
    print(board.read_text())


if __name__ == "__main__":
    main()
