"""Speed of tta.corruptions on this CPU.

Prints milliseconds per image for every corruption (mean over severities 1-5) at
CIFAR size (real test images) and at ImageNet size (the CIFAR images upsampled to
224x224, which is what the cost depends on), then the wall time to write the
full CIFAR-10-C (15 corruptions x 5 severities x 10,000 images) with
``generate_arrays``. Torch and BLAS use 1 thread per process.

    OMP_NUM_THREADS=1 TTA_FROST_DIR=../shared/data/frost \
        python benchmarks/bench_corruptions.py --data ../shared/data/cifar10 --workers 2
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tta.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, corrupt
from tta.corruptions.generate import generate_arrays


def per_image_ms(x: np.ndarray, name: str, preset: str) -> float:
    corrupt(x[:2], name, 1, preset=preset)  # warm caches (frost textures, tables)
    t = time.perf_counter()
    for s in range(1, 6):
        corrupt(x, name, s, preset=preset)
    return (time.perf_counter() - t) / (5 * len(x)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/cifar10")
    ap.add_argument("--n-cifar", type=int, default=1000, help="images per severity for the CIFAR timings")
    ap.add_argument("--n-imagenet", type=int, default=8, help="images per severity for the ImageNet timings")
    ap.add_argument("--workers", type=int, default=2, help="processes for the full CIFAR-10-C write")
    ap.add_argument("--skip-full", action="store_true", help="skip writing the full CIFAR-10-C")
    ap.add_argument("--out", default=None, help="where to write CIFAR-10-C (default: a temporary folder, removed)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"cpus {os.cpu_count()}")

    images = np.load(Path(args.data) / "test_images.npy", mmap_mode="r")
    labels = np.load(Path(args.data) / "test_labels.npy")
    step = max(1, len(images) // args.n_cifar)
    small = np.ascontiguousarray(images[::step][: args.n_cifar])
    big = np.ascontiguousarray(np.repeat(np.repeat(small[: args.n_imagenet], 7, axis=1), 7, axis=2))

    print(f"\n| corruption | CIFAR 32x32 ms/img (n={len(small)}) | ImageNet 224x224 ms/img (n={len(big)}) |")
    print("|---|---|---|")
    tot32 = tot224 = 0.0
    for name in ALL_CORRUPTIONS:
        a = per_image_ms(small, name, "cifar")
        b = per_image_ms(big, name, "imagenet")
        if name in CORRUPTIONS:
            tot32, tot224 = tot32 + a, tot224 + b
        print(f"| {name} | {a:.3f} | {b:.1f} |", flush=True)
    print(f"| **sum of the 15 standard** | {tot32:.2f} | {tot224:.0f} |")
    print(f"\nprojected single-process CIFAR-10-C time: {tot32 * 5 * len(images) / 1e3:.0f} s")

    if args.skip_full:
        return
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cifar10c_"))
    t = time.perf_counter()
    generate_arrays(images, labels, out, CORRUPTIONS, workers=args.workers, chunk_size=1000)
    wall = time.perf_counter() - t
    print(f"\nwrote CIFAR-10-C (15 x 5 x {len(images)}) with {args.workers} worker(s) in {wall:.1f} s "
          f"({wall / (15 * 5 * len(images)) * 1e3:.3f} ms per image-corruption)")
    if not args.out:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
