"""Pin what every registered method computes, so that a refactor can prove it changed nothing.

Runs each registered method, and each gradient or output method composed over every statistics policy
(``stats=...``), through the shared ResNet-20 over one fixed stream of 20 batches of the shared CIFAR-10
test images (Gaussian noise drawn from a fixed generator, labels in a fixed shuffled order), and records two
SHA-256 digests per variant: of every batch's logits, and of the final ``state_dict`` (tensors by key;
non-tensor state such as optimizer moments or memories walked recursively). One thread, default memory
format of ``tta.adapt`` (channels_last on CPU), so the arithmetic is the same from run to run.

    python benchmarks/method_hashes.py -o before.json            # record
    python benchmarks/method_hashes.py --check before.json       # exit 1 and list every variant that differs
    python benchmarks/method_hashes.py --check benchmarks/results/method_hashes.json   # the committed record

A layout-only change (files moved, names changed) must leave every digest equal. A change of arithmetic
(fused kernels, other summation orders) changes digests without being wrong: compare logits within float
tolerance for that instead (the methods' own tests).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TTA_SHARED", REPO.parent / "shared"))
N_BATCHES, BATCH = 20, 16


def _stream() -> list[torch.Tensor]:
    images = np.load(SHARED / "data/cifar10/test_images.npy", mmap_mode="r")
    order = np.random.default_rng(0).permutation(len(images))[: N_BATCHES * BATCH]
    x = torch.from_numpy(np.asarray(images)[order])
    x = x.permute(0, 3, 1, 2).float().div(255)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    return list((x + noise).clamp(0, 1).split(BATCH))


def _digest_into(h: "hashlib._Hash", value: Any) -> None:
    """Feed a state value into ``h`` in a canonical order (dict keys sorted, tensors as dtype+shape+bytes)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(b"D")
        for k in sorted(value, key=repr):
            h.update(repr(k).encode())
            _digest_into(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(b"L")
        for v in value:
            _digest_into(h, v)
    else:
        h.update(repr(value).encode())


def variants() -> list[tuple[str, str, dict[str, Any]]]:
    """(label, method, options) for every registered method and every stats composition."""
    from tta.methods import METHODS, STATS, get_method  # noqa: PLC0415

    out = []
    for name in sorted(METHODS):
        out.append((name, name, {}))
        if get_method(name).composes_stats:
            for stats in sorted(STATS):
                out.append((f"{name}+stats={stats}", name, {"stats": stats}))
    return out


def run(selected: list[str] | None = None) -> dict[str, dict[str, str]]:
    import tta  # noqa: PLC0415

    torch.set_num_threads(1)
    model = tta.load_model("resnet20", checkpoint=str(SHARED / "models/cifar10/resnet20.th"))
    xs = _stream()
    source = Path(tempfile.mkdtemp(prefix="tta-hashes-")) / "source.npy"
    train = np.load(SHARED / "data/cifar10/train_images.npy", mmap_mode="r")
    np.save(source, np.asarray(train[::500]))  # 100 clean images for EATA's Fisher
    required = {"eata": {"source_data": str(source), "fisher_samples": 64, "fisher_batch": 32}}
    out: dict[str, dict[str, str]] = {}
    for label, method, options in variants():
        if selected and label not in selected:
            continue
        torch.manual_seed(0)
        try:
            adapted = tta.adapt(model, method, dataset="cifar10", shift="continual", run_seed=0,
                                run_batch_size=BATCH, **required.get(method, {}), **options)
        except tta.TTAError as exc:  # a composition the method refuses (e.g. a policy it cannot wrap)
            out[label] = {"refused": str(exc).splitlines()[0]}
            continue
        logits = hashlib.sha256()
        try:
            for x in xs:
                _digest_into(logits, adapted(x))
        except RuntimeError as exc:  # recorded, so a refactor must fail the same way (and a fix shows up)
            out[label] = {"error": str(exc).splitlines()[0][:120]}
            print(f"{label:45s} ERROR {out[label]['error']}", file=sys.stderr)
            continue
        state = hashlib.sha256()
        _digest_into(state, adapted.state_dict())
        out[label] = {"logits": logits.hexdigest(), "state_dict": state.hexdigest()}
        print(f"{label:45s} {out[label].get('logits', out[label].get('refused'))[:16]}", file=sys.stderr)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write the digests to this JSON file")
    parser.add_argument("--check", help="compare against digests recorded earlier; exit 1 on any difference")
    parser.add_argument("--only", help="comma-separated variant labels to run")
    args = parser.parse_args()
    digests = run(args.only.split(",") if args.only else None)
    if args.output:
        Path(args.output).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    if args.check:
        want = json.loads(Path(args.check).read_text())
        keys = sorted(set(want) | set(digests)) if not args.only else sorted(digests)
        bad = [k for k in keys if want.get(k) != digests.get(k)]
        for k in bad:
            print(f"DIFFERS: {k}: {want.get(k)} -> {digests.get(k)}")
        print(f"{len(keys) - len(bad)} of {len(keys)} variants identical")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
