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

One thread, about 1 s per batch of 64 on a 2-core machine shared with other work. The pass is tta's own
online loop (``tta.pipeline.evaluate.evaluate``), so the errors are counted and named as ``tta run`` counts them.
A partial record (``"complete": false``, the batch errors so far) is rewritten atomically every minute;
an interrupted run starts over (the transcription keeps no resumable state).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

import tta
from tta.atomic import write_json
from tta.pipeline.evaluate import Tally, evaluate
from tta.pipeline.config import RunConfig
from tta.pipeline.prepare import prepare_stream
from tta.pipeline.results import read_json
from tta.runtime import versions

TESTS = Path(__file__).resolve().parent.parent / "tests"


def table(ref: dict[str, Any], ours: dict[str, Any] | None, label: str | None) -> str:
    """Markdown: the official step's error per domain, beside a tta run's (both ``metrics`` records)."""
    rows = [f"| domain | official step | {'tta ' + label if ours else ''} |", "|---|---|---|"]
    for k in ref["domain_keys"]:
        theirs = f"{ours['domain_errors'][k]:.2f}" if ours else ""
        rows.append(f"| {k} | {ref['domain_errors'][k]:.2f} | {theirs} |")
    theirs = f"{ours['overall_error']:.2f}" if ours else ""
    rows.append(f"| overall | {ref['overall_error']:.2f} | {theirs} |")
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
    try:
        ours = read_json(args.compare) if args.compare else None
    except (OSError, ValueError) as err:  # missing, not JSON, or not a tta result (InputError)
        raise SystemExit(f"--compare {args.compare}: {err}") from None
    if ours is not None and ours["stream"]["fingerprint"] != stream.fingerprint():
        raise SystemExit(f"--compare {args.compare} ran stream {ours['stream']['fingerprint']}, this one is "
                         f"{stream.fingerprint()}: pass the same --order, --domains, --seed and --n-examples")
    model = tta.load_model("resnet20", checkpoint=args.checkpoint)
    torch.manual_seed(args.seed)  # the official code draws its augmentation from the global generator
    ref = RefRoTTA(model, 10, ref_transform(32))
    record = {"method": "rotta (official step, tests/test_rotta_parts.RefRoTTA)", "seed": args.seed,
              "fingerprint": stream.fingerprint(), "versions": versions()}

    def save_partial(next_batch: int, tally: Tally) -> None:
        write_json(args.out, {**record, "complete": False, "batches": next_batch, "batch_errors": tally.batch_errors})

    metrics = evaluate(ref.forward, stream, checkpoint=save_partial, checkpoint_every_s=60.0).as_dict()
    write_json(args.out, {**record, "complete": True, "batches": len(stream), "metrics": metrics})
    print(table(metrics, ours["metrics"] if ours else None, args.compare))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
