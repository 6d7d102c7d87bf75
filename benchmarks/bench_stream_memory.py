"""Peak RSS of streaming a full-size 50,000 x 32 x 32 x 3 corruption file.

Writes a CIFAR-10-C-layout folder (one 153.6 MB corruption file + labels) to a
temporary directory, then, in a fresh process:

1. loads the model (resnet20, random weights unless --checkpoint) and runs one batch,
   recording peak RSS ("model baseline");
2. streams every image of all five severities through the stream engine in
   batches of 64 with a forward pass each, and records peak RSS again.

The increase must stay under 200 MB: the file is memory-mapped and only one
batch at a time is converted to float. Page-cache pages of the mapped file count
towards RSS only while resident; the reader touches them once, sequentially per batch.

    OMP_NUM_THREADS=1 python benchmarks/bench_stream_memory.py [--checkpoint resnet20.th]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N = 50_000


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(data_dir: str, checkpoint: str | None, shift: str) -> None:
    import torch

    torch.set_num_threads(1)
    from tta import build_model, load_model
    from tta.data.cifar_c import CifarCSource
    from tta.streams import make_stream

    model = load_model("resnet20", checkpoint=checkpoint) if checkpoint else build_model("resnet20").eval()
    with torch.no_grad():
        model(torch.rand(64, 3, 32, 32))
    base = peak_mb()
    src = CifarCSource(data_dir)
    seen = 0
    start = time.perf_counter()
    for sev in range(1, 6):
        stream = make_stream(src, shift, domains=["gaussian_noise"], severity=sev, batch_size=64, seed=sev)
        with torch.no_grad():
            for batch in stream:
                model(batch.x)
                seen += len(batch.y)
    wall = time.perf_counter() - start
    print(json.dumps({"images": seen, "model_peak_rss_mb": round(base, 1), "stream_peak_rss_mb": round(peak_mb(), 1),
                      "increase_mb": round(peak_mb() - base, 1), "wall_s": round(wall, 1), "shift": shift}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--shift", default="iid", help="order policy (iid reads in shuffled order: the worst case)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.checkpoint, args.shift)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "CIFAR-10-C"
        folder.mkdir()
        rng = np.random.default_rng(0)
        # written in slices so this parent process stays small as well
        mm = np.lib.format.open_memmap(folder / "gaussian_noise.npy", mode="w+", dtype=np.uint8, shape=(N, 32, 32, 3))
        for i in range(0, N, 5000):
            mm[i : i + 5000] = rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
        mm.flush()
        del mm
        np.save(folder / "labels.npy", np.tile(np.arange(10_000) % 10, 5).astype(np.uint8))
        cmd = [sys.executable, __file__, "--child", tmp, "--shift", args.shift]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    result = json.loads(out)
    result["limit_mb"] = 200
    result["ok"] = result["increase_mb"] < 200
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
