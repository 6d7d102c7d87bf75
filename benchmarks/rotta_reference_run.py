"""RoTTA's official step over a whole tta stream, to tell the method's long-run behaviour from tta's.

The test suite holds ``RefRoTTA`` (``tests/test_rotta_parts.py``), a transcription of BIT-DA/RoTTA's
``core/adapter/rotta.py`` with its RBN, CSTU memory and augmentation, which the tests show equal to
``tta``'s ``rotta`` step for step over a few hundred samples. This script runs that transcription,
as the official code would run it (float32, torch's global generator seeded with ``--seed``), over
the same stream that ``tta run`` builds (same data, order file, domains and fingerprint) and prints
its error per domain next to a ``tta run`` result of the same stream (``--compare``). Equal trends
over 150,000 samples mean a drift is RoTTA's, not an artefact of tta's implementation. Both draw the
same augmentations (the same seed and draw order, from torch's global generator here and from the
adapter's own generator in tta), so the two runs part only by float rounding (channels_last
convolutions in tta, NCHW here), which grows over thousands of updates.

    tta run --method rotta --shift continual --domains D --order o.npy --seed 2020 ... --output ours.json
    OMP_NUM_THREADS=1 python benchmarks/rotta_reference_run.py --domains D --order o.npy --seed 2020 \\
        --out ref.json --compare ours.json

One thread, about 1 s per batch of 64 on a 2-core machine shared with other work. The output is
rewritten atomically every 100 batches (a partial record, ``"complete": false``, until the end);
an interrupted run starts over (the transcription keeps no resumable state).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import tta
from tta.atomic import write_json
from tta.experiment import RunConfig, prepare_stream
from tta.runtime import versions

TESTS = Path(__file__).resolve().parent.parent / "tests"
log = logging.getLogger("rotta_reference_run")


def table(ref: dict, ours: dict | None, label: str | None) -> str:
    """Markdown: the official step's error per domain, beside a tta run's of the same stream."""
    rows = [f"| domain | official step | {'tta ' + label if ours else ''} |", "|---|---|---|"]
    for n, err in ref["domain_errors"].items():
        rows.append(f"| {n} | {err:.2f} | {ours['metrics']['domain_errors'][n]:.2f} |" if ours else f"| {n} | {err:.2f} | |")
    rows.append(f"| overall | {ref['overall_error']:.2f} | {ours['metrics']['overall_error']:.2f} |" if ours
                else f"| overall | {ref['overall_error']:.2f} | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--checkpoint", default="../shared/models/cifar10/resnet20.th")
    p.add_argument("--frost-dir", default="../shared/data/frost")
    p.add_argument("--domains", default=None, help="comma-separated, in stream order [default: the canonical 15]")
    p.add_argument("--order", default=None, help="an order file from benchmarks/bitda_order.py or --export-order")
    p.add_argument("--shift", default="continual")
    p.add_argument("--n-examples", type=int, default=None)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--out", required=True, help="JSON written here")
    p.add_argument("--compare", default=None, help="a tta run result (JSON) of the same stream")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from test_rotta_parts import RefRoTTA, ref_transform  # noqa: PLC0415  (the test's transcription)

    config = RunConfig(
        method="rotta", shift=args.shift, dataset="cifar10", data_dir=args.data_dir, model="resnet20",
        checkpoint=args.checkpoint, domains=args.domains.split(",") if args.domains else None, seed=args.seed,
        order_file=args.order, n_examples=args.n_examples, frost_dir=args.frost_dir,
    )
    config, _, stream, _ = prepare_stream(config)
    ours = json.loads(Path(args.compare).read_text()) if args.compare else None
    if ours is not None and ours["stream"]["fingerprint"] != stream.fingerprint():
        raise SystemExit(f"--compare {args.compare} ran stream {ours['stream']['fingerprint']}, this one is "
                         f"{stream.fingerprint()}: pass the same --order, --domains, --seed and --n-examples")
    names = [d.name for d in stream.domains]  # the stream is one severity, as tta run names its domains
    model = tta.load_model("resnet20", checkpoint=args.checkpoint)
    torch.manual_seed(args.seed)  # the official code draws its augmentation from the global generator
    ref = RefRoTTA(model, 10, ref_transform(32))
    wrong, seen, batch_errors = np.zeros(len(names)), np.zeros(len(names)), []
    start = time.process_time()
    for i in range(len(stream)):
        b = stream.batch(i)
        miss = (ref.forward(b.x).argmax(1) != b.y).double()
        np.add.at(wrong, b.domain.numpy(), miss.numpy())
        np.add.at(seen, b.domain.numpy(), 1)
        batch_errors.append(100 * float(miss.mean()))
        if i % 100 == 99 or i == len(stream) - 1:
            doc = {"method": "rotta (official step, tests/test_rotta_parts.RefRoTTA)", "seed": args.seed,
                   "fingerprint": stream.fingerprint(), "complete": i == len(stream) - 1, "batches": i + 1,
                   "overall_error": 100 * wrong.sum() / seen.sum(),
                   "domain_errors": {n: 100 * w / s for n, w, s in zip(names, wrong, seen) if s},
                   "batch_errors": batch_errors, "cpu_s": time.process_time() - start,
                   "versions": versions()}
            write_json(args.out, doc, indent=1)
            log.info("batch %d/%d: error so far %.2f%%", i + 1, len(stream), doc["overall_error"])
    print(table(doc, ours, args.compare))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
