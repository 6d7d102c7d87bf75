"""Forward-time benchmark of every adaptation method, as a ratio to the source model.

For each backbone, every method wraps the same model and sees the same batch; rounds
are interleaved (source, tbn, ..., source, tbn, ...) and each method's best time over
the rounds is kept, so that load from other processes on a shared CPU inflates all
methods alike. Ratios are against ``source`` measured in the same run.

    OMP_NUM_THREADS=1 python benchmarks/bench_methods.py            # both backbones
    OMP_NUM_THREADS=1 python benchmarks/bench_methods.py --quick    # ResNet-20 only

Targets: normalization-only methods <= 1.15x source, unmix-tns (K = 16) <= 1.25x.
Gradient methods (tent, core, momentum-decay-hbs) include their backward pass and optimizer step.
"""
from __future__ import annotations

import argparse
import time

import torch

import tta

NORM_ONLY = ["tbn", "tbn-ema", "alpha-bn", "adab2n", "momentum-decay"]
TARGETS = {**{m: 1.15 for m in NORM_ONLY}, "unmix-tns": 1.25}
METHODS: list[tuple[str, dict]] = [
    ("source", {}),
    *[(m, {}) for m in NORM_ONLY],
    ("unmix-tns", {"K": 16}),
    ("tent", {}),
    ("core", {}),
    ("momentum-decay-hbs", {}),
]
GRAD = ("tent", "core", "momentum-decay-hbs")
SETTINGS = [("resnet20", 200, 32), ("resnet50", 64, 224)]


def bench_model(name: str, batch: int, size: int, rounds: int, methods: list[tuple[str, dict]], seed: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = tta.build_model(name).eval()
    x = torch.rand(batch, 3, size, size, generator=gen)
    adapters = {m: tta.adapt(model, m, **opts) for m, opts in methods}
    for a in adapters.values():  # warm-up: allocator, one-time kernel selection
        a(x)
    best = {m: float("inf") for m in adapters}
    for _ in range(rounds):
        for m, a in adapters.items():
            t0 = time.perf_counter()
            a(x)
            best[m] = min(best[m], time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; best time is kept")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="ResNet-20 only")
    parser.add_argument("--skip-grad", action="store_true", help="leave out the gradient methods")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = [m for m in METHODS if not (args.skip_grad and m[0] in GRAD)]
    settings = SETTINGS[:1] if args.quick else SETTINGS
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s), float32, "
          f"channels_last (the Adapter default on CPU), best of {args.rounds} interleaved rounds")
    results = {}
    for name, batch, size in settings:
        results[name] = bench_model(name, batch, size, args.rounds, methods, args.seed)
    header = "| method | " + " | ".join(f"{n} b{b} {s}px: ms | ratio" for n, b, s in settings) + " | target |"
    print(header)
    print("|" + "---|" * (2 + 2 * len(settings)))
    for m, _ in methods:
        cells = []
        for name, _, _ in settings:
            t, t0 = results[name][m], results[name]["source"]
            cells.append(f"{1e3 * t:.0f} | {t / t0:.2f}x")
        target = f"<= {TARGETS[m]:.2f}x" if m in TARGETS else "-"
        print(f"| {m} | " + " | ".join(cells) + f" | {target} |")


if __name__ == "__main__":
    main()
