"""Where a CoTTA step's time goes, against the source forward, in one process (issue #31).

A CoTTA step on CPU is 34 full forwards (student, anchor, 32 augmented teacher views, each with batch
statistics), the student's backward, the augmentation and the updates. This times the parts one after the
other (best of ``--rounds``, thread CPU time), so the step can be compared with the sum of its parts and with
the source forward measured minutes, not hours, apart. ResNet-20 with random weights, batch 200, one thread,
NCHW input as ``bench_methods.py`` feeds it (the adapters convert to channels_last).

    OMP_NUM_THREADS=1 python benchmarks/bench_cotta_parts.py
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

import tta
from tta.methods._view_augment import COTTA_AUGMENT, augment_views, sample_view_params


def best_ms(fn: Callable[[], object], rounds: int) -> float:
    """Best thread-CPU milliseconds of ``fn`` over ``rounds`` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = tta.build_model("resnet20").eval()
    x = torch.rand(args.batch, 3, 32, 32)
    source = tta.adapt(model, "source")
    batch_stats = tta.adapt(model, "tbn")
    cotta = tta.adapt(model, "cotta", dataset="cifar10", run_seed=0)
    generator = torch.Generator().manual_seed(0)

    def augment() -> torch.Tensor:
        params = sample_view_params(32, x.shape[-1], COTTA_AUGMENT, generator)
        return augment_views(x, params, COTTA_AUGMENT, generator=generator)

    views = augment().view(32, *x.shape)
    src = best_ms(lambda: source(x), args.rounds)
    rows = {
        "source forward": src,
        "forward with batch statistics (tbn)": best_ms(lambda: batch_stats(x), args.rounds),
        "32 teacher views (tbn forwards)": best_ms(lambda: [batch_stats(v) for v in views], max(1, args.rounds // 2)),
        "augmentation of 32 views": best_ms(augment, args.rounds),
        "CoTTA step": best_ms(lambda: cotta(x), max(1, args.rounds // 2)),
    }
    print(f"torch {torch.__version__}, 1 thread, ResNet-20 random weights, batch {args.batch}, thread CPU time")
    print("| part | CPU ms | x source |\n|---|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.0f} | {ms / src:.2f}x |")


if __name__ == "__main__":
    main()
