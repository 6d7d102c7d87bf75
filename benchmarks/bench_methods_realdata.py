"""Online error of every method on the shared CIFAR-10 test set with Gaussian noise, i.i.d. vs class-sorted.

The full-size version of tests/test_methods_realdata.py: the shared ResNet-20, all 10,000
shared CIFAR-10 test images plus N(0, 0.1^2) noise (seed 0, clipped to [0, 1]), batch 64,
one pass (``--sigma 0``: the clean images). ``dataset=cifar10`` selects the UnMix-TNS protocol's
learning rate (1e-5) for rotta/note over UnMix-TNS. "sorted" is the stored class-sorted row order (a fully label-correlated stream);
"iid" is a seeded shuffle (seed 1).

    OMP_NUM_THREADS=1 python benchmarks/bench_methods_realdata.py [--shared ../shared] [--step 1]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

import tta

METHODS: list[tuple[str, dict]] = [
    ("source", {}),
    ("tbn", {}),
    ("tbn-ema", {}),
    ("tbn-ema", {"passes": 1}),
    ("alpha-bn", {}),
    ("adab2n", {}),
    ("momentum-decay", {}),
    ("unmix-tns", {"K": 16, "seed": 0}),
    ("tent", {}),
    ("tent", {"stats": "unmix-tns", "stats_options": {"K": 16, "seed": 0}, "lr": 1e-5}),
    ("alpha-bn-mcc", {}),
    ("momentum-decay-hbs", {}),
    # entropy, consistency and teacher methods at their CIFAR-10 defaults (EATA: Fisher from 2,000 train images)
    ("sar", {"dataset": "cifar10"}),
    ("eta", {"dataset": "cifar10"}),
    ("eata", {"dataset": "cifar10", "source_data": "TRAIN"}),
    ("deyo", {"dataset": "cifar10"}),
    ("shot-im", {"dataset": "cifar10"}),
    ("rdumb", {"dataset": "cifar10"}),
    ("roid", {"dataset": "cifar10"}),
    ("cotta", {"dataset": "cifar10"}),
    ("roid", {"dataset": "cifar10", "stats": "unmix-tns", "stats_options": {"K": 16}}),
    ("cotta", {"dataset": "cifar10", "stats": "unmix-tns", "stats_options": {"K": 16}}),
    ("rotta", {}),
    ("rotta", {"stats": "unmix-tns", "stats_options": {"K": 16, "seed": 0}, "dataset": "cifar10"}),
    ("note", {}),
    ("note", {"stats": "unmix-tns", "stats_options": {"K": 16, "seed": 0}, "dataset": "cifar10"}),
    ("lame", {}),
    ("lame", {"stats": "unmix-tns", "stats_options": {"K": 16, "seed": 0}}),
]


def online_error(adapter, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    wrong = 0
    for i in range(0, len(x), batch):
        wrong += int((adapter(x[i : i + batch]).argmax(1) != y[i : i + batch]).sum())
    return 100.0 * wrong / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.environ.get("TTA_SHARED", str(Path(__file__).resolve().parents[2] / "shared")))
    parser.add_argument("--step", type=int, default=1, help="use every step-th image (1 = all 10,000)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="method names to run (default: all)")
    parser.add_argument("--skip", nargs="*", default=(), help="method names to leave out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shared = Path(args.shared)
    images = np.load(shared / "data/cifar10/test_images.npy", mmap_mode="r")
    labels = np.load(shared / "data/cifar10/test_labels.npy")
    idx = np.arange(0, len(images), args.step)
    x = torch.from_numpy(np.array(images[idx])).permute(0, 3, 1, 2).float().div_(255)
    x = (x + args.sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp_(0, 1)
    y = torch.from_numpy(labels[idx])
    shuffle = torch.randperm(len(idx), generator=torch.Generator().manual_seed(1))
    model = tta.load_model("resnet20", checkpoint=shared / "models/cifar10/resnet20.th")
    print(f"ResNet-20, {len(idx)} CIFAR-10 test images + N(0, {args.sigma}^2) noise, batch {args.batch}, "
          f"{torch.get_num_threads()} thread(s); online error %")
    print("| method | options | iid | class-sorted | seconds |")
    print("|---|---|---|---|---|")
    for name, opts in METHODS:
        if (args.only and name not in args.only) or name in args.skip:
            continue
        t0 = time.perf_counter()
        shown = ", ".join(f"{k}={v}" for k, v in opts.items()) or "-"
        if opts.get("source_data") == "TRAIN":  # clean source images for EATA's Fisher
            opts = {**opts, "source_data": str(shared / "data/cifar10/train_images.npy")}
        iid = online_error(tta.adapt(model, name, **opts), x[shuffle], y[shuffle], args.batch)
        srt = online_error(tta.adapt(model, name, **opts), x, y, args.batch)
        print(f"| {name} | {shown} | {iid:.2f} | {srt:.2f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
