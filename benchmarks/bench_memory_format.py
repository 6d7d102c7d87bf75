"""channels_last vs NCHW forward time per normalization layer, and what tta picks.

tta runs CPU models in channels_last unless they hold group norms
(``tta.runtime.prefers_channels_last``). This checks that choice: both formats of
the same ResNet-20 are timed round-robin in one process, and the median CPU time of
the compute thread is reported (robust to other jobs on a shared CPU). Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_memory_format.py --threads 1 --batch 200
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import tta
from tta.runtime import prefers_channels_last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--norms", nargs="*", default=["bn", "gn", "bcn", "in", "ln"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fns = {}
    for kind in args.norms:
        base = tta.build_model("resnet20", norm=kind).eval()
        for fmt in (torch.contiguous_format, torch.channels_last):
            model = tta.build_model("resnet20", norm=kind).eval().to(memory_format=fmt)
            model.load_state_dict(base.state_dict())
            xx = x.contiguous(memory_format=fmt)
            fns[kind, fmt] = (lambda m=model, inp=xx: m(inp))
        fns[kind, "pick"] = prefers_channels_last(base)
    times: dict = {k: [] for k in fns if k[1] != "pick"}
    with torch.inference_mode():
        for fn in (f for k, f in fns.items() if k[1] != "pick"):
            fn()
        for _ in range(args.rounds):
            for key in times:
                t0 = time.thread_time()
                fns[key]()
                times[key].append(time.thread_time() - t0)
    print(f"# ResNet-20 eval forward, batch {args.batch}, {args.threads} torch thread(s), torch {torch.__version__}; "
          f"median thread CPU time of {args.rounds} round-robin rounds")
    print(f"{'norm':6s} {'NCHW ms':>9s} {'ch_last ms':>11s} {'ch_last/NCHW':>13s}  tta picks")
    for kind in args.norms:
        a = statistics.median(times[kind, torch.contiguous_format])
        b = statistics.median(times[kind, torch.channels_last])
        pick = "channels_last" if fns[kind, "pick"] else "NCHW"
        print(f"{kind:6s} {1e3 * a:9.1f} {1e3 * b:11.1f} {b / a:13.2f}  {pick}")


if __name__ == "__main__":
    main()
