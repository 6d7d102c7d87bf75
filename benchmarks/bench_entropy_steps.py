"""CPU cost of one step of each entropy-filtering method, as a ratio to a plain entropy step.

The baseline ("entropy") is TENT's step: one forward, mean entropy, backward, SGD step.
Every method gets its own copy of the shared ResNet-20 (BatchNorm on batch statistics,
float32, contiguous NCHW) and sees the same noisy CIFAR-10 batch; rounds are interleaved
and each method keeps its best compute-thread CPU time (``time.thread_time``), so other
processes on a shared CPU do not count. The selection counts show how much work the
filters left. Run with one thread:

    OMP_NUM_THREADS=1 TTA_SHARED=/path/to/shared python benchmarks/bench_entropy_steps.py --rounds 5
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import tta
from tta.methods.deyo import deyo_step
from tta.methods.eata import ETAState, compute_fisher, eata_parameters, eata_step, eta_step
from tta.methods._entropy import softmax_entropy
from tta.methods.rdumb import RDumbState, rdumb_step
from tta.methods.sar import SARState, make_sar_optimizer, sar_parameters, sar_step
from tta.methods.shot_im import shot_im_parameters, shot_im_step


def batch_statistics(model: nn.Module) -> nn.Module:
    model.train().requires_grad_(False)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.requires_grad_(True)
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    return model


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
    source = torch.from_numpy(np.array(images[-256:])).permute(0, 3, 1, 2).float().div(255)
    base = batch_statistics(tta.load_model("resnet20", checkpoint=args.checkpoint))

    def setup(kind: str):
        model = copy.deepcopy(base)
        if kind == "shot-im":
            model.requires_grad_(False)
            params = [p for _, p in shot_im_parameters(model)]
            for p in params:
                p.requires_grad_(True)
        else:
            params = [p for _, p in (sar_parameters(model) if kind in ("sar", "deyo") else eata_parameters(model))]
        opt = make_sar_optimizer(params, 1e-3) if kind == "sar" else torch.optim.SGD(params, 1e-3, momentum=0.9)
        if kind == "entropy":
            def step():
                loss = softmax_entropy(model(x)).mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                return {}
        elif kind == "sar":
            st = SARState()
            def step():
                return sar_step(model, x, opt, st, restore=lambda: None).stats
        elif kind == "eta":
            st = ETAState()
            def step():
                return eta_step(model, x, opt, st, d_margin=0.4).stats
        elif kind == "eata":
            st, fisher = ETAState(), compute_fisher(model, params, source, alpha=1.0, num_samples=256, batch_size=64,
                                                    generator=torch.Generator().manual_seed(1))
            def step():
                return eata_step(model, x, opt, st, fisher, d_margin=0.4).stats
        elif kind == "deyo":
            g = torch.Generator().manual_seed(2)
            def step():
                return deyo_step(model, x, opt, generator=g).stats
        elif kind == "shot-im":
            def step():
                shot_im_step(model, x, opt)
                return {}
        else:
            st = RDumbState()
            def step():
                return rdumb_step(model, x, opt, st, restore=lambda: None, d_margin=0.4).stats
        return step

    kinds = ["entropy", "sar", "eta", "eata", "deyo", "shot-im", "rdumb"]
    steps = {k: setup(k) for k in kinds}
    for s in steps.values():
        s()  # warm-up
    best = {k: float("inf") for k in kinds}
    picked: dict[str, str] = {}
    for _ in range(args.rounds):
        for k, s in steps.items():
            c0 = time.thread_time()
            stats = s()
            best[k] = min(best[k], time.thread_time() - c0)
            if "selected_1" in stats:
                picked[k] = f"{stats['selected_1']}/{stats.get('selected_2', '-')}"
    print(f"ResNet-20, batch {args.batch}, 32 px, float32, NCHW contiguous, threads {torch.get_num_threads()}, "
          f"best of {args.rounds} rounds (thread CPU time)")
    print("| step | CPU ms | ratio to entropy step | selected S1/S2 (last round) |\n|---|---|---|---|")
    for k in kinds:
        print(f"| {k} | {best[k] * 1e3:.0f} | {best[k] / best['entropy']:.2f}x | {picked.get(k, '-')} |")


if __name__ == "__main__":
    main()
