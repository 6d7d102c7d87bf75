"""Throughput and peak memory of every method on one device, at fp32 and bf16, plus ``tta run`` against a
bare forward loop and CoTTA's views per call chosen by measurement. ``benchmarks/device_check.sh`` runs it.

    python benchmarks/bench_device.py --device cuda --out benchmarks/results/device_check_<card>.md
    python benchmarks/bench_device.py --device cpu --quick --out /tmp/device_check_cpu.md   # the pipeline, small

Backbones with random weights: WRN-28-10 at batch 200 (32 px) and ResNet-50 at batch 64 (224 px); each
method adapts on the same fixed random batch. img/s = batch / median seconds per step over ``--steps``
steps after ``--warmup`` (CUDA synchronized around each step). Peak memory: ``torch.cuda.max_memory_allocated``
over the method's steps, reset before each (on CPU: not measured). A global ``--budget`` (seconds) stops
starting new rows once spent; rows not reached are listed as such, never left out silently.
CoTTA runs with ``views_per_call`` set by this script's own measurement (``--views`` candidates).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import tta
from tta.methods import METHODS, get_method

SETTINGS = {"full": [("wrn-28-10", 200, 32), ("resnet50", 64, 224)], "quick": [("resnet20", 16, 32)]}
COMPOSED = [("tent", {"stats": "unmix-tns", "stats_options": {"K": 16}}),
            ("cotta", {"stats": "unmix-tns", "stats_options": {"K": 16}})]


def label(method: str, opts: dict) -> str:
    return method + (" (stats=unmix-tns)" if opts.get("stats") else "") + (
        f" (views_per_call={opts['views_per_call']})" if "views_per_call" in opts else "")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, device: torch.device, warmup: int, steps: int) -> tuple[float, float | None]:
    """(median seconds per step, peak MiB allocated or None on CPU)."""
    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return statistics.median(times), peak


def source_npy(size: int) -> str:
    path = os.path.join(tempfile.mkdtemp(prefix="tta-device-"), f"source{size}.npy")
    np.save(path, np.random.default_rng(0).integers(0, 256, (64, size, size, 3), dtype=np.uint8))
    return path


def method_rows(quick: bool) -> list[tuple[str, dict]]:
    names = ["source", "tbn", "unmix-tns", "tent", "cotta"] if quick else sorted(METHODS)
    return [(m, {}) for m in names] + ([] if quick else COMPOSED)


def pick_views_per_call(model, x, device, candidates: list[int], warmup: int, steps: int, precision: str
                        ) -> tuple[int, dict[int, float]]:
    """CoTTA's views per teacher call with the highest img/s on this device (32 views)."""
    rates = {}
    for k in candidates:
        torch.manual_seed(0)
        a = tta.adapt(model, "cotta", views_per_call=k, precision=precision, ap=1.0)  # conf < 1: always augment
        sec, _ = time_steps(lambda: a(x), device, warmup, steps)
        rates[k] = x.shape[0] / sec
        del a
    return max(rates, key=rates.get), rates


def bench_setting(name: str, batch: int, size: int, device: torch.device, precision: str, args, deadline: float
                  ) -> tuple[list[tuple[str, str, str]], dict]:
    torch.manual_seed(0)
    model = tta.build_model(name).eval().to(device)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    rows, notes = [], {}
    views, rates = pick_views_per_call(model, x, device, args.views, 1, max(1, args.steps // 2), precision)
    notes["views_per_call"] = (views, rates)
    for method, opts in method_rows(args.quick):
        key = label(method, opts)
        if time.monotonic() > deadline:
            rows.append((key, "not run (time budget)", "-"))
            continue
        extra = {"source_data": source_npy(size), "fisher_samples": 64} if method == "eata" else {}
        if method == "cotta":
            extra["views_per_call"] = views if not opts.get("stats") else 1
        try:
            torch.manual_seed(0)
            a = tta.adapt(model, method, precision=precision, **opts, **extra)
            sec, peak = time_steps(lambda: a(x), device, args.warmup, args.steps)
            rows.append((key, f"{batch / sec:,.0f}", "-" if peak is None else f"{peak:,.0f}"))
            del a
        except Exception as exc:  # a row that fails is reported, not hidden
            rows.append((key, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}", "-"))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, notes


def bare_vs_run(device: torch.device, quick: bool, workdir: Path) -> dict:
    """``tta run -m source`` against a bare loop over the same memory-mapped data and model, on ``device``:
    images per second of each (a random CIFAR-10-C-layout folder and a random-weight ResNet-20)."""
    n = 400 if quick else 4000
    folder = workdir / "CIFAR-10-C"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(folder / "gaussian_noise.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.arange(n) % 10, 5).astype(np.uint8))
    ckpt = workdir / "resnet20-random.pt"
    torch.manual_seed(0)
    torch.save(tta.build_model("resnet20").state_dict(), ckpt)
    batch = 200
    # bare loop: the severity-5 slice, memory-mapped, to the device, one forward per batch, argmax back
    data = np.load(folder / "gaussian_noise.npy", mmap_mode="r")[4 * n:]
    model = tta.load_model("resnet20", checkpoint=ckpt).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, n, batch):
                xb = torch.from_numpy(np.array(data[i:i + batch])).to(device).permute(0, 3, 1, 2)
                model(xb.float().div_(255)).argmax(1).cpu()

    bare()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    bare()
    sync(device)
    bare_rate = n / (time.perf_counter() - t0)
    cmd = [sys.executable, "-m", "tta", "run", "-m", "source", "--dataset", "cifar10", "--data-dir", str(workdir),
           "--domains", "gaussian_noise", "--model", "resnet20", "--checkpoint", str(ckpt), "--batch-size",
           str(batch), "--device", device.type, "--quiet", "--fresh", "--overwrite", "-o", str(workdir / "r.json")]
    subprocess.run(cmd, check=True, capture_output=True)  # warm-up (file cache, CUDA context)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    doc = json.loads((workdir / "r.json").read_text())
    run_rate = doc["metrics"]["images_per_s"]
    return {"bare": bare_rate, "run": run_rate, "run_wall_incl_startup": n / wall, "images": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="ResNet-20 b16 and five methods: proves the pipeline")
    parser.add_argument("--precisions", nargs="*", default=None, help="default: fp32 bf16")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--views", type=int, nargs="*", default=[1, 4, 8, 32], help="CoTTA views_per_call to try")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds for all method rows together")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU visible")
    if device.type == "cpu":
        torch.set_num_threads(1)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (1 thread)"
    precisions = args.precisions or ["fp32", "bf16"]
    settings = SETTINGS["quick" if args.quick else "full"]
    start = time.monotonic()
    deadline = start + args.budget
    lines = [f"# Device check: {card}", "",
             f"torch {torch.__version__}, {'CUDA ' + str(torch.version.cuda) if device.type == 'cuda' else 'CPU'}; "
             f"random weights; median of {args.steps} steps after {args.warmup} warm-up; "
             f"{'channels_last' if device.type == 'cpu' else 'contiguous NCHW (the Adapter default on accelerators)'}; "
             "TF32 as PyTorch's defaults leave it. Command: "
             f"`python benchmarks/bench_device.py {' '.join(sys.argv[1:])}`", ""]
    for name, batch, size in settings:
        per = {}
        for precision in precisions:
            per[precision] = bench_setting(name, batch, size, device, precision, args, deadline)
        lines += [f"## {name}, batch {batch}, {size} px", "",
                  "| method | " + " | ".join(f"{p} img/s | {p} peak MiB" for p in precisions) + " |",
                  "|---|" + "---|---|" * len(precisions)]
        keys = [r[0] for r in per[precisions[0]][0]]
        for i, key in enumerate(keys):
            cells = " | ".join(f"{per[p][0][i][1]} | {per[p][0][i][2]}" for p in precisions)
            lines.append(f"| {key} | {cells} |")
        for p in precisions:
            views, rates = per[p][1]["views_per_call"]
            lines.append(f"\nCoTTA views_per_call at {p}, measured (img/s): "
                         + ", ".join(f"{k}: {r:,.0f}" for k, r in rates.items()) + f"; chosen: {views}")
        lines.append("")
    with tempfile.TemporaryDirectory(prefix="tta-device-run-") as tmp:
        r = bare_vs_run(device, args.quick, Path(tmp))
    ratio = r["run"] / r["bare"]
    lines += ["## `tta run -m source` against a bare forward loop", "",
              f"Random-weight ResNet-20, {r['images']} random CIFAR-10-C-layout images (memory-mapped), batch 200, "
              f"on {device.type}: bare loop {r['bare']:,.0f} img/s, `tta run` {r['run']:,.0f} img/s "
              f"(its own timing of the online pass) = **{ratio:.2f}x** of the bare loop (target >= 0.9); "
              f"with process start-up and data checks {r['run_wall_incl_startup']:,.0f} img/s.",
              "", f"Total time of this script: {time.monotonic() - start:.0f} s.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
