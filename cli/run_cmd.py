"""``tta run``: adapt a model online over a test stream and report its error."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from tta.errors import InputError
from tta.evaluate import evaluate
from tta.experiment import DEFAULT_BATCH_SIZE, DEFAULT_SEED, DEFAULT_SEVERITY, RunConfig, finish, prepare
from tta.resume import load_partial, partial_path, run_key, save_partial
from tta.results import DEMO_BANNER, check_writable, markdown_table, write_json

from .options import parse_key_values


def _parse_delta(value: str | None) -> float | str | None:
    if value is None or value == "default":
        return value
    try:
        return float(value)
    except ValueError:
        raise InputError(f"--delta expects a number such as 0.1, got {value!r}") from None


@click.command("run")
@click.option("--method", "-m", default="source", show_default=True, help="Adaptation method (tta list methods).")
@click.option("--shift", "-s", default="continual", show_default=True, help="iid | continual | mixed | gradual (tta list shifts).")
@click.option("--dataset", default="auto", show_default=True,
              help="auto | cifar10 | cifar100 | imagenet | demo. auto: CIFAR-10-C if found or fetchable, else the demo.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder holding CIFAR-10-C/ etc. [default: $TTA_DATA or ~/.cache/tta/data]")
@click.option("--model", default=None, help="Backbone (tta list models). [default: RobustBench's, per dataset]")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Weights file for --model.")
@click.option("--norm", default=None,
              help="Norm layer the checkpoint was trained with (tta list norms). [default: from the tta train record "
                   "beside --checkpoint, else the model's own]")
@click.option("--norm-option", "norm_options", multiple=True, metavar="KEY=VALUE", help="Option of --norm; repeatable.")
@click.option("--option", "-O", "options", multiple=True, metavar="KEY=VALUE", help="Method hyperparameter; repeatable.")
@click.option("--source-data", type=click.Path(dir_okay=False), default=None,
              help="Clean source images (.npy, uint8 NHWC) for methods that need them, e.g. eata.")
@click.option("--domains", default=None, help="Comma-separated corruptions, in stream order. [default: the canonical 15]")
@click.option("--severity", default=DEFAULT_SEVERITY, show_default=True, type=int)
@click.option("--batch-size", "-b", default=DEFAULT_BATCH_SIZE, show_default=True, type=int)
@click.option("--n-examples", default=None, type=int, help="Subsample each domain to this many images.")
@click.option("--seed", default=DEFAULT_SEED, show_default=True, type=int, help="Determines the stream order.")
@click.option("--delta", default=None, is_flag=False, flag_value="default",
              help="Dirichlet label correlation; alone: 0.1 CIFAR, 0.01 ImageNet.")
@click.option("--sorted", "sort_labels", is_flag=True, help="Class-sorted stream.")
@click.option("--order", "order_file", type=click.Path(dir_okay=False), default=None, help="Replay this exported order (.json/.npy).")
@click.option("--export-order", type=click.Path(dir_okay=False), default=None, help="Write the stream order (.json/.npy).")
@click.option("--download", is_flag=True, help="Download CIFAR-C from Zenodo when it is not under --data-dir.")
@click.option("--threads", default=1, show_default=True, type=int, help="torch CPU threads (1 is fastest on shared 2-core CPUs).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
@click.option("--workers", default=None, type=int, help="DataLoader workers. [default: 0 for arrays, 4 for image files]")
@click.option("--frost-dir", type=click.Path(file_okay=False), default=None,
              help="Frost textures for generated domains. [default: $TTA_FROST_DIR, else an imagecorruptions wheel]")
@click.option("--imagenet-subset", default="5000", show_default=True, help="5000 (RobustBench list) | 50000 | FILE")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Result JSON. [default: tta-results/<dataset>-<method>-<shift>-s<seed>.json]")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Save the error curve (needs matplotlib).")
@click.option("--checkpoint-every", default=120.0, show_default=True, type=float,
              help="Seconds between saves of the run's progress (<output>.partial.pt), for resuming.")
@click.option("--fresh", is_flag=True, help="Ignore saved progress of an interrupted run and start over.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def run_cmd(**kw) -> None:
    """Run a model through a shifting test stream, adapting online, and report the error.

    \b
    tta run --method unmix-tns --shift continual
    tta run --dataset demo --method unmix-tns --shift continual
    """
    config = RunConfig(
        method=kw["method"], shift=kw["shift"], dataset=kw["dataset"], data_dir=kw["data_dir"],
        model=kw["model"], checkpoint=kw["checkpoint"], options=parse_key_values(kw["options"], "--option", "prior=16"),
        norm=kw["norm"], norm_options=parse_key_values(kw["norm_options"], "--norm-option", "num_groups=8"),
        domains=[d.strip() for d in kw["domains"].split(",") if d.strip()] if kw["domains"] else None,
        severity=kw["severity"], batch_size=kw["batch_size"], n_examples=kw["n_examples"], seed=kw["seed"],
        delta=_parse_delta(kw["delta"]), sort_labels=kw["sort_labels"], order_file=kw["order_file"],
        download=kw["download"], threads=kw["threads"], device=kw["device"], workers=kw["workers"],
        imagenet_subset=kw["imagenet_subset"], frost_dir=kw["frost_dir"], source_data=kw["source_data"],
    )
    # Every output path is checked before the run, so a bad one costs nothing.
    outputs = [p for p in (kw["output"], kw["export_order"], kw["plot"]) if p]
    for path in outputs:
        check_writable(path)
    if kw["plot"]:
        try:
            import matplotlib  # noqa: F401, PLC0415
        except ImportError:
            raise InputError("--plot needs matplotlib; pip install 'tta[plot]' or drop --plot") from None
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    prepared = prepare(config, confirm_download=(lambda q: click.confirm(q, err=True)) if interactive else None)
    for note in prepared.notes:
        click.echo(note, err=True)
    if prepared.source.is_demo:
        click.secho(f"*** {DEMO_BANNER} ***", err=True, bold=True)
    if kw["export_order"]:
        prepared.stream.export_order(kw["export_order"])
    output = check_writable(kw["output"] or Path("tta-results") / (
        f"{prepared.source.dataset}-{config.method}-{config.shift}-s{config.seed}.json"))
    # Progress of a long run is saved beside the result; rerunning the same command resumes it.
    partial = partial_path(output)
    key = run_key(prepared.stream.fingerprint(), config.method, prepared.hparams, prepared.model_info)
    resumed = None if kw["fresh"] else load_partial(partial, key, prepared.adapted)
    start, tally = resumed if resumed else (0, None)
    if resumed:
        click.echo(f"resuming at batch {start} of {len(prepared.stream)} from {partial} (--fresh to start over)", err=True)
    metrics = evaluate(
        prepared.adapted, prepared.stream, device=prepared.device, progress=not kw["quiet"], start_batch=start,
        tally=tally, checkpoint=lambda nxt, t: save_partial(partial, key, nxt, t, prepared.adapted),
        checkpoint_every_s=kw["checkpoint_every"],
    )
    doc = finish(prepared, metrics)
    doc["stream"]["resumed_at_batch"] = start
    write_json(output, doc)
    partial.unlink(missing_ok=True)
    if kw["plot"]:
        from tta.plotting import plot_error_curve  # noqa: PLC0415  (matplotlib is optional)

        plot_error_curve(doc, kw["plot"])
    click.echo(markdown_table(doc))
    click.echo(f"\nresult: {output}", err=True)
