"""CPU cost of the RoTTA, NOTE and LAME parts relative to the source model's forward.

ResNet-20 (random weights: only time matters), batch 200 of 32x32 images, float32,
contiguous (NCHW) memory format, one torch thread. Each line is the compute thread's CPU
time (``time.thread_time``) per test batch, best of ``--rounds`` interleaved rounds, and
its ratio to the source forward measured in the same run:

* memory inserts: 200 CSTU / PBRS ``add`` calls (the per-sample, inherently sequential part);
* rotta / note step: the whole per-batch step, streams of 4 batches (800 samples, so the
  12 updates of 64-sample memory batches are included, averaged per batch);
* lame: ``features_and_logits`` plus the solver (rbf, knn 5).

    OMP_NUM_THREADS=1 python benchmarks/bench_rotta_note_lame.py --rounds 3
"""
from __future__ import annotations

import argparse
import copy
import os
import time

import torch

import tta
from tta.methods._sample_memory import CSTU, PBRS
from tta.methods.lame import features_and_logits, lame
from tta.methods.note import configure_note, note_optimizer, note_step
from tta.methods.rotta import configure_rotta, rotta_optimizer, rotta_step

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

    def rotta():
        s, t, params = configure_rotta(copy.deepcopy(model))
        opt, mem, seen = rotta_optimizer(params), CSTU(64, 10), 0
        for x in xs:
            _, seen = rotta_step(s, t, mem, opt, x, seen, g)

    def note():
        m = copy.deepcopy(model)
        params = configure_note(m)
        opt, mem, seen = note_optimizer(params), PBRS(64, 10), 0
        for x in xs:
            _, seen = note_step(m, mem, opt, x, seen, g)

    def lame_batch():
        f, z = features_and_logits(model, xs[0])
        lame(z, f)

    cases = {"source forward": (source, 1), "CSTU inserts": (inserts_cstu, 1), "PBRS inserts": (inserts_pbrs, 1),
             "rotta step": (rotta, BATCHES), "note step": (note, BATCHES), "lame": (lame_batch, 1)}
    best = {k: float("inf") for k in cases}
    for _ in range(args.rounds):
        for name, (fn, per) in cases.items():
            best[name] = min(best[name], cpu(fn) / per)
    base = best["source forward"]
    print("\n| part | CPU ms per batch | ratio to source forward |\n|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {t * 1e3:.1f} | {t / base:.2f}x |")


if __name__ == "__main__":
    main()
