"""CPU cost of one step of each entropy-filtering method, as a ratio to TENT's step.

Each method is the adapter ``tta.adapt(model, <method>, dataset="cifar10")`` builds (its
registered defaults; EATA's Fisher from 256 clean test images at the end of the set), called
on the same noisy CIFAR-10 batch. The baseline is ``tent``: one forward, mean entropy, backward,
one optimizer step. Shared ResNet-20, float32, contiguous NCHW (``channels_last=False``);
every adapter is reset before each of its calls (outside the timing), so each call is a
first step; rounds are interleaved and each method keeps its best compute-thread CPU time
(``time.thread_time``), so other processes on a shared CPU do not count. The selection
counts (ETA's two filters, from the adapter's state) show how much work the filters left.
Run with one thread:

    OMP_NUM_THREADS=1 TTA_SHARED=/path/to/shared python benchmarks/bench_entropy_steps.py --rounds 5
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import tta

def main() -> None:
    shared = Path(os.environ.get("TTA_SHARED", "../shared"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=shared / "models/cifar10/resnet20.th")
    ap.add_argument("--images", type=Path, default=shared / "data/cifar10/test_images.npy")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    images = np.load(args.images, mmap_mode="r")
    x = torch.from_numpy(np.array(images[: args.batch])).permute(0, 3, 1, 2).float().div(255)
    x = (x + 0.12 * torch.randn(x.shape, generator=gen)).clamp(0, 1).contiguous()
    source = Path(tempfile.mkdtemp(prefix="tta-bench-")) / "source.npy"
    np.save(source, np.asarray(images[-256:]))
    model = tta.load_model("resnet20", checkpoint=args.checkpoint)
    options = {"eata": {"source_data": str(source), "fisher_samples": 256}}
    kinds = ["tent", "sar", "eta", "eata", "deyo", "shot-im", "rdumb"]
    adapters = {k: tta.adapt(model, k, dataset="cifar10", channels_last=False, **options.get(k, {})) for k in kinds}
    for a in adapters.values():
        a(x)  # warm-up
    best = {k: float("inf") for k in kinds}
    picked: dict[str, str] = {}
    for _ in range(args.rounds):
        for k, a in adapters.items():
            a.reset()
            c0 = time.thread_time()
            a(x)
            best[k] = min(best[k], time.thread_time() - c0)
            state = getattr(a.memory, "state", None)
            eta = getattr(state, "eta", state)
            if hasattr(eta, "num_selected"):
                picked[k] = f"{eta.num_reliable}/{eta.num_selected}"
    print(f"ResNet-20, batch {args.batch}, 32 px, float32, NCHW contiguous, threads {torch.get_num_threads()}, "
          f"best of {args.rounds} rounds (thread CPU time)")
    print("| step | CPU ms | ratio to tent | selected S1/S2 (eta filters) |\n|---|---|---|---|")
    for k in kinds:
        print(f"| {k} | {best[k] * 1e3:.0f} | {best[k] / best['tent']:.2f}x | {picked.get(k, '-')} |")


if __name__ == "__main__":
    main()
