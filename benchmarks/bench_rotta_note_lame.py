"""CPU cost of the RoTTA, NOTE and LAME parts relative to the source model's forward.

ResNet-20 (random weights: only time matters), batch 200 of 32x32 images, float32,
contiguous (NCHW) memory format, one torch thread. Each line is the compute thread's CPU
time (``time.thread_time``) per test batch, best of ``--rounds`` interleaved rounds, and
its ratio to the source forward measured in the same run:

* memory inserts: 200 CSTU / PBRS ``add`` calls (the per-sample, inherently sequential part);
* rotta / note: the adapter ``tta.adapt(model, "rotta" | "note", dataset="cifar10")`` builds (its
  default options), called on streams of 4 batches (800 samples, so the 12 updates of 64-sample
  memory batches are included, averaged per batch), reset before each round (outside the timing);
* lame: the ``lame`` adapter on one batch (``features_and_logits`` plus the solver, rbf, knn 5).

    OMP_NUM_THREADS=1 python benchmarks/bench_rotta_note_lame.py --rounds 3
"""
from __future__ import annotations

import argparse
import os
import time

import torch

import tta
from tta.methods._sample_memory import CSTU, PBRS

BATCH, BATCHES = 200, 4


def cpu(fn) -> float:
    t = time.thread_time()
    fn()
    return time.thread_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"float32, NCHW contiguous, ResNet-20, batch {BATCH}")
    torch.manual_seed(0)
    model = tta.load_model("resnet20", pretrained=False).eval()
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(BATCH, 3, 32, 32, generator=g) for _ in range(BATCHES)]
    labels = torch.randint(10, (BATCH,), generator=g).tolist()
    unc = torch.rand(BATCH, generator=g).tolist()

    def source():
        with torch.no_grad():
            model(xs[0])

    def inserts_cstu():
        m = CSTU(64, 10)
        for i in range(BATCH):
            m.add(xs[0][i], labels[i], unc[i])

    def inserts_pbrs():
        m = PBRS(64, 10)
        for i in range(BATCH):
            m.add(xs[0][i], labels[i], g)

    adapters = {name: tta.adapt(model, name, dataset="cifar10", channels_last=False)
                for name in ("rotta", "note", "lame")}

    def stream(adapter):
        def run():
            for x in xs:
                adapter(x)
        return run

    def lame_batch():
        adapters["lame"](xs[0])

    cases = {"source forward": (source, 1), "CSTU inserts": (inserts_cstu, 1), "PBRS inserts": (inserts_pbrs, 1),
             "rotta": (stream(adapters["rotta"]), BATCHES), "note": (stream(adapters["note"]), BATCHES),
             "lame": (lame_batch, 1)}
    best = {k: float("inf") for k in cases}
    for _ in range(args.rounds):
        for name, (fn, per) in cases.items():
            if name in adapters:
                adapters[name].reset()
            best[name] = min(best[name], cpu(fn) / per)
    base = best["source forward"]
    print("\n| part | CPU ms per batch | ratio to source forward |\n|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {t * 1e3:.1f} | {t / base:.2f}x |")


if __name__ == "__main__":
    main()
