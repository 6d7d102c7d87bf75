"""Wall time of an 8-cell `tta sweep`: 2 local workers against 1, and the Ray backend's overhead per cell.

The 8 cells are source and tbn x continual and iid x seeds 1 and 2 on the shared
ResNet-20 (BatchNorm; tta runs it channels_last on the CPU) with CIFAR-10-C domains
generated on the fly from the real test images (2 domains x N images per domain,
severity 5, batch 64). Every worker runs one torch thread. Each configuration
sweeps into a fresh store; the fingerprinting plan is made once, outside the timings.
Times are wall-clock seconds of `tta.sweep.sweep`, including the start of the worker
processes (local) or of the Ray workers (Ray; the cluster start is timed separately).

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py --data-dir ../shared/data \
        --checkpoint ../shared/models/cifar10/resnet20.th --json benchmarks/results/bench_sweep.json

On a shared machine other jobs compete for the cores: the 1- and 2-worker sweeps alternate
(``--repeats``) and the best wall time of each counts; the summed compute time inside the
cells shows how much the machine's load slowed each sweep.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tta.atomic import write_json
from tta.pipeline.config import RunConfig
from tta.sweep.store import Store
from tta.sweep import LocalBackend, plan, sweep


def _timed(cells, backend, db: Path) -> tuple[float, float]:
    """(wall seconds of the sweep, summed compute seconds inside the cells)."""
    with Store(db) as store:
        t0 = time.perf_counter()
        summary = sweep(cells, store, backend)
        wall = time.perf_counter() - t0
        assert not summary.failed, summary.failed
        busy = sum(d["metrics"]["wall_time_s"] for d in store.documents())
    return wall, busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--n-examples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2, help="alternating 1- and 2-worker sweeps; the best of each counts")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    configs = [RunConfig(method=m, shift=s, seed=seed, dataset="cifar10", data_dir=args.data_dir, model="resnet20",
                         checkpoint=args.checkpoint, domains=["gaussian_noise", "fog"], n_examples=args.n_examples,
                         threads=1)
               for m in ("source", "tbn") for s in ("continual", "iid") for seed in (1, 2)]
    cells = plan(configs)
    out: dict = {"cells": len(cells), "n_examples_per_domain": args.n_examples, "domains": 2, "threads_per_worker": 1,
                 "memory_format": "channels_last (tta's CPU default for BatchNorm models)", "cpu_count": os.cpu_count(),
                 "load_average_at_start": os.getloadavg()}
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    walls: dict[int, list[float]] = {1: [], 2: []}
    busy: dict[int, list[float]] = {1: [], 2: []}
    for rep in range(args.repeats):
        # alternate the order so a change in the machine's load does not favour one side
        for jobs in ((1, 2) if rep % 2 == 0 else (2, 1)):
            backend = LocalBackend(jobs)
            try:
                wall, compute = _timed(cells, backend, tmp / f"local{jobs}-{rep}.db")
            finally:
                backend.close()
            walls[jobs].append(wall)
            busy[jobs].append(compute)
            print(f"local backend, {jobs} worker(s), repeat {rep + 1}: {wall:.1f} s wall, "
                  f"{compute:.1f} s of compute inside the cells")
    for jobs in (1, 2):
        out[f"local_{jobs}_workers_s"] = min(walls[jobs])
        out[f"local_{jobs}_workers_all_s"] = walls[jobs]
        out[f"local_{jobs}_workers_cell_compute_s"] = busy[jobs]
    out["ratio_2_over_1_workers"] = out["local_2_workers_s"] / out["local_1_workers_s"]
    print(f"2 workers / 1 worker (best of {args.repeats}): {out['ratio_2_over_1_workers']:.2f}x (target <= 0.6)")
    if not args.no_ray:
        import ray  # noqa: PLC0415

        from tta.sweep import RayBackend  # noqa: PLC0415

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
        out["ray_cluster_start_s"] = time.perf_counter() - t0
        try:
            wall, busy = _timed(cells, RayBackend(jobs=2), tmp / "ray.db")
        finally:
            ray.shutdown()
        out["ray_2_workers_s"] = wall
        out["ray_2_workers_cell_compute_s"] = busy
        out["ray_overhead_per_cell_s"] = (wall - out["local_2_workers_s"]) / len(cells)
        print(f"ray backend, 2 workers: {wall:.1f} s wall (+{out['ray_cluster_start_s']:.1f} s cluster start); "
              f"overhead vs local: {out['ray_overhead_per_cell_s']:+.2f} s per cell")
    out["load_average_at_end"] = os.getloadavg()
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
