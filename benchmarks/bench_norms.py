"""Forward and training-step time per normalization layer, as a ratio to the backbone's reference norm.

The reference is BatchNorm for the CNNs (ResNet-20 by default) and LayerNorm for
the ``vit-cifar*`` transformers, which take only the token-level kinds.
Every norm is timed on the same backbone, input and thread count in one process.
The norms are measured round-robin (one repetition of each per round) and the
median over rounds is reported, so load from other processes hits every norm
alike. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_norms.py --threads 1 --batch 128 --rounds 7
    OMP_NUM_THREADS=1 python benchmarks/bench_norms.py --model vit-cifar-lns --batch 64 --rounds 5
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import tta
from tta.atomic import write_json
from tta.models import resolve_model_name
from tta.norms import NORMS, token_kinds


def _step_fns(model_name: str, kind: str, batch: int, channels_last: bool, seed: int):
    torch.manual_seed(seed)
    model = tta.build_model(model_name, norm=kind)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 32, 32, generator=g).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def forward() -> None:
        model.eval()
        with torch.inference_mode():
            model(x)

    def train_step() -> None:
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return forward, train_step


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20", help="backbone (tta list models)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--nchw", action="store_true", help="contiguous NCHW instead of channels_last")
    ap.add_argument("--norms", nargs="*", default=None, help="subset of norms (the reference is always included)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = resolve_model_name(args.model)
    ref = spec.default_norm
    available = token_kinds() if ref != "bn" else list(NORMS)
    kinds = [ref] + [k for k in (args.norms or available) if k != ref]
    fns = {k: _step_fns(spec.name, k, args.batch, not args.nchw, seed=0) for k in kinds}
    for k in kinds:
        for _ in range(args.warmup):
            fns[k][0](), fns[k][1]()
    fwd = {k: [] for k in kinds}
    step = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k in kinds:
            fwd[k].append(_time(fns[k][0]))
            step[k].append(_time(fns[k][1]))
    med_f = {k: statistics.median(v) for k, v in fwd.items()}
    med_s = {k: statistics.median(v) for k, v in step.items()}
    fmt = "NCHW (contiguous)" if args.nchw else "channels_last"
    print(f"# {spec.name}, reference norm {ref}, batch {args.batch}, {args.threads} torch thread(s), {fmt}, torch {torch.__version__}, "
          f"{platform.machine()}; median of {args.rounds} round-robin rounds after {args.warmup} warmup")
    print(f"{'norm':10s} {'forward ms':>11s} {'fwd / ref':>9s} {'train step ms':>14s} {'step / ref':>10s}")
    rows = []
    for k in kinds:
        row = {"norm": k, "forward_ms": 1e3 * med_f[k], "forward_ratio": med_f[k] / med_f[ref],
               "step_ms": 1e3 * med_s[k], "step_ratio": med_s[k] / med_s[ref]}
        rows.append(row)
        print(f"{k:10s} {row['forward_ms']:11.1f} {row['forward_ratio']:9.2f} {row['step_ms']:14.1f} {row['step_ratio']:10.2f}")
    if args.json:
        write_json(args.json, {"model": spec.name, "reference": ref, "threads": args.threads, "batch": args.batch,
                               "memory_format": fmt, "torch": torch.__version__, "rows": rows})


if __name__ == "__main__":
    main()
