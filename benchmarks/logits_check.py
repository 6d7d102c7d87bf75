"""Same outputs before and after a performance change: logits of every method over a few real batches.

Run it once on the old code with ``--save`` and once on the new code with ``--against``; it prints, per
method, the largest absolute logit difference and whether the argmax agrees, and exits non-zero when a
method differs by more than ``--atol``. Typical use, with the old commit unpacked next to the new one::

    git archive <old> | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old OMP_NUM_THREADS=1 python benchmarks/logits_check.py --save /tmp/old.pt
    OMP_NUM_THREADS=1 python benchmarks/logits_check.py --against /tmp/old.pt

Data: the shared ResNet-20 and CIFAR-10 test images (class-sorted as stored, every 7th image, plus
Gaussian noise of std 0.1 drawn with seed 0), batches of ``--batch``, one thread, the Adapter's default
memory format (channels_last on CPU). Each method is built with ``torch.manual_seed(seed)`` first and
its own ``seed`` option where it has one, so stochastic methods (CoTTA's augmentations and restores)
draw the same numbers in both runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

import tta

#: (label, method, options): the statistics-only adapters first, then the stochastic teacher method
CASES: list[tuple[str, str, dict]] = [
    ("tbn", "tbn", {}),
    ("tbn (prior=16)", "tbn", {"prior": 16.0}),
    ("tbn-ema", "tbn-ema", {}),
    ("tbn-ema (passes=1)", "tbn-ema", {"passes": 1}),
    ("alpha-bn", "alpha-bn", {}),
    ("adab2n", "adab2n", {}),
    ("momentum-decay", "momentum-decay", {}),
    ("rbn", "rbn", {}),
    ("iabn", "iabn", {}),
    ("unmix-tns", "unmix-tns", {"K": 16, "seed": 0}),
    ("rotta", "rotta", {}),
    ("tent", "tent", {}),
    ("cotta", "cotta", {}),
    ("cotta (stats=unmix-tns)", "cotta", {"stats": "unmix-tns", "stats_options": {"K": 16, "seed": 0}}),
]


def real_batches(shared: Path, n_batches: int, batch: int) -> list[torch.Tensor]:
    images = np.load(shared / "data" / "cifar10" / "test_images.npy", mmap_mode="r")
    idx = np.arange(0, len(images), 7)[: n_batches * batch]
    x = torch.from_numpy(np.array(images[idx])).permute(0, 3, 1, 2).float().div_(255)
    x = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp_(0, 1)
    return list(x.split(batch))


def run(shared: Path, cases: list[tuple[str, str, dict]], n_batches: int, batch: int, seed: int
        ) -> dict[str, torch.Tensor]:
    model = tta.load_model("resnet20", checkpoint=shared / "models" / "cifar10" / "resnet20.th")
    xs = real_batches(shared, n_batches, batch)
    out = {}
    for key, method, opts in cases:
        torch.manual_seed(seed)
        adapter = tta.adapt(model, method, **opts)
        out[key] = torch.stack([adapter(x).detach().float() for x in xs])
        print(f"{key}: {n_batches} batches", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the logits here")
    parser.add_argument("--against", type=Path, help="compare with logits saved by --save")
    parser.add_argument("--only", nargs="*", help="case labels to run (default: all)")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--shared", type=Path,
                        default=Path(os.environ.get("TTA_SHARED", Path(__file__).resolve().parents[2] / "shared")))
    args = parser.parse_args()
    if (args.save is None) == (args.against is None):
        parser.error("pass exactly one of --save and --against")
    torch.set_num_threads(1)
    cases = [c for c in CASES if not args.only or c[0] in args.only]
    logits = run(args.shared, cases, args.batches, args.batch, args.seed)
    if args.save is not None:
        torch.save(logits, args.save)
        return
    old = torch.load(args.against, weights_only=True)
    bad = []
    print(f"| method | max abs logit difference ({args.batches} batches of {args.batch}) | argmax agrees |")
    print("|---|---|---|")
    for key, new in logits.items():
        if key not in old:
            print(f"| {key} | not in {args.against.name} | - |")
            continue
        diff = float((new - old[key]).abs().max())
        agree = float((new.argmax(-1) == old[key].argmax(-1)).float().mean())
        print(f"| {key} | {diff:.2e} | {100 * agree:.2f} % |")
        if not diff <= args.atol:
            bad.append(key)
    if bad:
        print(f"differ by more than {args.atol:g}: {', '.join(bad)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
