"""Source (no adaptation) error of trained backbones on corrupted copies of a test set.

Each checkpoint is given as --ckpt NORM=PATH (loaded with ``tta.load_model(model, checkpoint=PATH,
norm=NORM)``, with the norm options of the ``tta train`` record beside PATH when there is one).
The corrupted images come from a CIFAR-10-C-layout folder (``--cifar-c``, e.g. written by
``tta corrupt``; the severity's block of rows is memory-mapped), or else are generated once
per corruption with ``tta.corruptions.corrupt(images, name, severity, preset, seed)`` and cached.

    OMP_NUM_THREADS=1 python benchmarks/eval_norms_corruptions.py \\
        --data /path/to/cifar10 --severity 5 --cache /tmp/cifar10c \\
        --corruptions gaussian_noise shot_noise impulse_noise defocus_blur contrast \\
        --ckpt bn=/tmp/runs/resnet20_bn.pt --ckpt gn=/tmp/runs/resnet20_gn.pt --ckpt bcn=/tmp/runs/resnet20_bcn.pt
    OMP_NUM_THREADS=1 python benchmarks/eval_norms_corruptions.py --data /path/to/cifar10 --cifar-c /tmp/c10c/CIFAR-10-C \
        --corruptions all --ckpt gn=/tmp/runs/resnet20_gn.pt
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import tta
from tta.atomic import save_npy, write_json
from tta.data.domain_source import BENCHMARK_CORRUPTIONS
from tta.runtime import prefers_channels_last
from tta.training import training_record
from tta.training.data import ImageArrays, load_images
from tta.training.trainer import offline_accuracy


def _from_cifar_c(folder: Path, name: str, severity: int) -> ImageArrays:
    images = np.load(folder / f"{name}.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy").astype(np.int64)
    n = len(labels) // 5
    rows = slice((severity - 1) * n, severity * n)
    return ImageArrays(images[rows], labels[rows], f"{folder / name}.npy[{rows.start}:{rows.stop}]")


def _corrupted(test: ImageArrays, name: str, severity: int, seed: int, cache: Path) -> ImageArrays:
    from tta.corruptions import corrupt  # noqa: PLC0415

    path = cache / f"{name}_s{severity}_seed{seed}.npy"
    if not path.is_file():
        save_npy(path, corrupt(np.asarray(test.images), name, severity, preset="cifar", seed=seed))
    return ImageArrays(np.load(path, mmap_mode="r"), test.labels, str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", action="append", required=True, metavar="NORM=PATH", help="a checkpoint and its norm; repeatable")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--data", required=True, help="folder holding test_images.npy / test_labels.npy")
    ap.add_argument("--corruptions", nargs="+", default=["gaussian_noise"], help="names, or 'all' for the 15")
    ap.add_argument("--severity", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="/tmp/tta_corrupted")
    ap.add_argument("--cifar-c", default=None, help="CIFAR-10-C-layout folder to read instead of generating")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    test = load_images(args.data, "test")
    sets = {"clean": test}
    if args.corruptions == ["all"]:
        args.corruptions = list(BENCHMARK_CORRUPTIONS)
    for name in args.corruptions:
        t0 = time.perf_counter()
        if args.cifar_c:
            sets[name] = _from_cifar_c(Path(args.cifar_c), name, args.severity)
        else:
            sets[name] = _corrupted(test, name, args.severity, args.seed, Path(args.cache))
        print(f"# {name} s{args.severity}: ready in {time.perf_counter() - t0:.1f} s", flush=True)
    results = {}
    for pair in args.ckpt:
        norm, _, path = pair.partition("=")
        record = training_record(path)
        options = record.get("norm_options", {}) if record and record.get("norm") == norm else {}
        model = tta.load_model(args.model, checkpoint=path, norm=norm, **options)
        if prefers_channels_last(model):
            model = model.to(memory_format=torch.channels_last)
        results[norm] = {k: 1.0 - offline_accuracy(model, v, batch_size=500) for k, v in sets.items()}
        print(f"# {norm}: " + ", ".join(f"{k} {100 * e:.2f}%" for k, e in results[norm].items()), flush=True)
    cols = list(sets)
    print(f"\nsource error (%), {args.model}, {len(test)} test images, severity {args.severity}, seed {args.seed}")
    print("| norm | " + " | ".join(cols) + " | mean corrupted |")
    print("|---" * (len(cols) + 2) + "|")
    for norm, errs in results.items():
        mean_c = np.mean([errs[c] for c in args.corruptions])
        print(f"| {norm} | " + " | ".join(f"{100 * errs[c]:.2f}" for c in cols) + f" | {100 * mean_c:.2f} |")
    if args.json:
        write_json(args.json, {"severity": args.severity, "seed": args.seed, "source": args.cifar_c or "generated",
                               "threads": args.threads, "errors": results})


if __name__ == "__main__":
    main()
