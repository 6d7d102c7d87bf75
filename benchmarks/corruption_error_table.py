"""Source error of the shared ResNet-20 on CIFAR-10 corrupted by tta.corruptions.

Every corruption x severity is generated on the fly from the clean test images
(seed 0, global indices = row numbers, so a subset gets exactly the images the
full CIFAR-10-C files would hold) and evaluated with 1 torch thread and
channels_last. Results are cached in a JSON file so an interrupted run resumes.

    OMP_NUM_THREADS=1 python benchmarks/corruption_error_table.py \
        --data ../shared/data/cifar10 --checkpoint ../shared/models/cifar10/resnet20.th \
        --every 10 --out benchmarks/results/resnet20_cifar10c_error.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import tta
from tta.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, corrupt


def error(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    wrong = 0
    with torch.inference_mode():
        for s in range(0, len(images), batch):
            x = torch.from_numpy(images[s : s + batch]).permute(0, 3, 1, 2).float().div_(255)
            x = x.contiguous(memory_format=torch.channels_last)
            wrong += (model(x).argmax(1).numpy() != labels[s : s + batch]).sum()
    return 100.0 * wrong / len(images)


def _save(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/cifar10")
    ap.add_argument("--checkpoint", default="../shared/models/cifar10/resnet20.th")
    ap.add_argument("--every", type=int, default=1, help="use test rows 0, k, 2k, ... (rows are sorted by class)")
    ap.add_argument("--extras", action="store_true", help="also the 4 extra corruptions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/resnet20_cifar10c_error.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    images = np.load(Path(args.data) / "test_images.npy", mmap_mode="r")
    labels = np.load(Path(args.data) / "test_labels.npy")
    rows = np.arange(0, len(images), args.every)
    clean = np.ascontiguousarray(images[rows])
    y = labels[rows]
    model = tta.load_model("resnet20", checkpoint=args.checkpoint).to(memory_format=torch.channels_last)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    key = {"n": len(rows), "every": args.every, "seed": args.seed}
    results = json.loads(out.read_text()) if out.exists() else {}
    if results.get("config") != key:
        results = {"config": key, "error": {}}
    err = results["error"]
    if "clean" not in err:
        err["clean"] = error(model, clean, y)
        _save(out, results)
    names = ALL_CORRUPTIONS if args.extras else CORRUPTIONS
    for name in names:
        for sev in range(1, 6):
            k = f"{name}/{sev}"
            if k in err:
                continue
            t = time.perf_counter()
            xc = corrupt(clean, name, sev, preset="cifar", seed=args.seed, indices=rows)
            err[k] = error(model, xc, y)
            _save(out, results)
            print(f"{k:24s} {err[k]:6.2f}%  ({time.perf_counter() - t:.1f} s)", flush=True)

    print(f"\nResNet-20, {len(rows)} CIFAR-10 test images (every {args.every}th row), seed {args.seed}; "
          f"clean error {err['clean']:.2f}%\n")
    print("| corruption | s1 | s2 | s3 | s4 | s5 | mean |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        vals = [err[f"{name}/{s}"] for s in range(1, 6)]
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {np.mean(vals):.1f} |")
    std = [err[f"{n}/{s}"] for n in CORRUPTIONS for s in range(1, 6)]
    print("| **mean of the 15** | " + " | ".join(
        f"{np.mean([err[f'{n}/{s}'] for n in CORRUPTIONS]):.1f}" for s in range(1, 6)) + f" | {np.mean(std):.1f} |")


if __name__ == "__main__":
    main()
