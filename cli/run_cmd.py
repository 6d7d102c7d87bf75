"""``tta run``: adapt a model online over a test stream and report its error."""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import click

from tta.errors import InputError

from .options import parse_key_values

# The defaults are repeated here, not imported, so that `tta --help` does not import torch
# (tests/test_trust_cli.py checks they agree with tta.experiment).
DEFAULT_BATCH_SIZE, DEFAULT_SEED, DEFAULT_SEVERITY = 64, 2020, 5
#: what matplotlib's savefig writes without extra backends
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")
_NUMBER = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _parse_delta(value: str | None) -> float | str | None:
    if value is None or value == "default":
        return value
    value = value.strip()
    try:
        delta = float(value)
    except ValueError:
        raise InputError(f"--delta expects a number such as 0.1, got {value!r}") from None
    if not math.isfinite(delta) or delta < 0:
        raise InputError(f"--delta must be a finite number >= 0 (0 sorts by class), got {value}; e.g. --delta 0.1")
    return delta


class _RunCommand(click.Command):
    """Lets ``--delta`` take a negative number, so ``--delta -1`` is told its range, not 'No such option'."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            if args[i] == "--delta" and i + 1 < len(args) and args[i + 1].startswith("-") and _NUMBER.match(args[i + 1]):
                # click takes a leading "-" for the next option; a leading space hides it and float() ignores it
                out += ["--delta", " " + args[i + 1]]
                i += 2
                continue
            out.append(args[i])
            i += 1
        return super().parse_args(ctx, out)


def _check_plot(path: str) -> None:
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in PLOT_FORMATS:
        raise InputError(f"--plot {path}: cannot draw a .{suffix or '(no suffix)'} file; "
                         f"end the name in one of .{', .'.join(PLOT_FORMATS)}")
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        raise InputError("--plot needs matplotlib; pip install 'tta[plot]' or drop --plot") from None


@click.command("run", cls=_RunCommand)
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
@click.option("--domains", default=None, help="Comma-separated corruptions, in stream order. [default: the canonical 15]")
@click.option("--severity", default=DEFAULT_SEVERITY, show_default=True, type=int)
@click.option("--batch-size", "-b", default=None, type=int, help=f"[default: {DEFAULT_BATCH_SIZE}, 16 on ImageNet-C]")
@click.option("--n-examples", default=None, type=int,
              help="Subsample each domain to this many images (--protocol reference: the reference's NUM_EX).")
@click.option("--seed", default=DEFAULT_SEED, show_default=True, type=int,
              help="Drives every random draw: stream order, subsets, method initialization, torch.")
@click.option("--delta", default=None, is_flag=False, flag_value="default",
              help="Dirichlet label correlation; alone: 0.1 CIFAR-10, 0.01 CIFAR-100 and ImageNet.")
@click.option("--protocol", type=click.Choice(["tta", "reference"]), default="tta", show_default=True,
              help="Sample order: tta's own, or the reference framework's exactly (docs/running.md).")
@click.option("--sorted", "sort_labels", is_flag=True, help="Class-sorted stream.")
@click.option("--order", "order_file", type=click.Path(dir_okay=False), default=None, help="Replay this exported order (.json/.npy).")
@click.option("--export-order", type=click.Path(dir_okay=False), default=None, help="Write the stream order (.json/.npy).")
@click.option("--download", is_flag=True, help="Download CIFAR-C from Zenodo when it is not under --data-dir.")
@click.option("--threads", default=1, show_default=True, type=int, help="torch CPU threads (1 is fastest on shared 2-core CPUs).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
@click.option("--workers", default=None, type=int, help="DataLoader workers. [default: 0 for arrays, 4 for image files]")
@click.option("--frost-dir", type=click.Path(file_okay=False), default=None,
              help="Frost textures for generated domains. [default: $TTA_FROST_DIR, else an imagecorruptions wheel]")
@click.option("--imagenet-subset", default=None,
              help="5000 (RobustBench list) | 50000 | FILE [default: 50000 with --delta/--sorted/--n-examples, else 5000]")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Result JSON. [default: tta-results/<dataset>-<method>-<shift>-s<seed>.json]")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Save the error curve (needs matplotlib).")
@click.option("--checkpoint-every", default=120.0, show_default=True, type=float,
              help="Seconds between saves of the run's progress (<output>.partial.pt), for resuming.")
@click.option("--fresh", is_flag=True, help="Ignore saved progress of an interrupted run and start over.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output written by another configuration.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def run_cmd(**kw) -> None:
    """Run a model through a shifting test stream, adapting online, and report the error.

    \b
    tta run --method unmix-tns --shift continual
    tta run --dataset demo --method unmix-tns --shift continual
    """
    from tta.evaluate import RunInterrupted, evaluate  # noqa: PLC0415  (torch; keeps `tta --help` fast)
    from tta.experiment import RunConfig, finish, prepare  # noqa: PLC0415
    from tta.lock import output_lock  # noqa: PLC0415
    from tta.resume import data_identity, load_partial, partial_path, run_key, save_partial, stop_on_signals  # noqa: PLC0415
    from tta.results import DEMO_BANNER, check_overwrite, check_writable, configuration, markdown_table, write_json  # noqa: PLC0415

    config = RunConfig(
        method=kw["method"], shift=kw["shift"], dataset=kw["dataset"], data_dir=kw["data_dir"],
        model=kw["model"], checkpoint=kw["checkpoint"], options=parse_key_values(kw["options"], "--option", "prior=16"),
        norm=kw["norm"], norm_options=parse_key_values(kw["norm_options"], "--norm-option", "num_groups=8"),
        domains=[d.strip() for d in kw["domains"].split(",") if d.strip()] if kw["domains"] else None,
        severity=kw["severity"], batch_size=kw["batch_size"], n_examples=kw["n_examples"], seed=kw["seed"],
        delta=_parse_delta(kw["delta"]), sort_labels=kw["sort_labels"], order_file=kw["order_file"],
        download=kw["download"], threads=kw["threads"], device=kw["device"], workers=kw["workers"],
        imagenet_subset=kw["imagenet_subset"], frost_dir=kw["frost_dir"], protocol=kw["protocol"],
    )
    # Every output path is checked before the run, so a bad one costs nothing.
    outputs = [p for p in (kw["output"], kw["export_order"], kw["plot"]) if p]
    for path in outputs:
        check_writable(path)
    if kw["plot"]:
        _check_plot(kw["plot"])
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    prepared = prepare(config, confirm_download=(lambda q: click.confirm(q, err=True)) if interactive else None)
    for note in prepared.notes:
        click.echo(note, err=True)
    if prepared.source.is_demo:
        click.secho(f"*** {DEMO_BANNER} ***", err=True, bold=True)
    output = check_writable(kw["output"] or Path("tta-results") / (
        f"{prepared.source.dataset}-{config.method}-{config.shift}-s{config.seed}.json"))
    with output_lock(output):
        note = check_overwrite(output, configuration(
            config.method, prepared.hparams, prepared.model_info, prepared.source.describe(),
            prepared.stream.fingerprint()), kw["overwrite"])
        if kw["export_order"]:
            prepared.stream.export_order(kw["export_order"])
        # Progress of a long run is saved beside the result; rerunning the same command resumes it.
        partial = partial_path(output)
        key = run_key(prepared.stream.fingerprint(), config.method, prepared.hparams, prepared.model_info,
                      data_identity(prepared.source, prepared.stream.domains))
        resumed = None if kw["fresh"] else load_partial(partial, key, prepared.adapted)
        start, tally = resumed if resumed else (0, None)
        if resumed:
            click.echo(f"resuming at batch {start} of {len(prepared.stream)} from {partial} (--fresh to start over)", err=True)
        try:
            with stop_on_signals() as should_stop:
                metrics = evaluate(
                    prepared.adapted, prepared.stream, device=prepared.device, progress=not kw["quiet"],
                    start_batch=start, tally=tally,
                    checkpoint=lambda nxt, t: save_partial(partial, key, nxt, t, prepared.adapted),
                    checkpoint_every_s=kw["checkpoint_every"], should_stop=should_stop,
                )
        except RunInterrupted as stop:
            click.echo(f"stopped before batch {stop.next_batch} of {stop.total}; progress saved to {partial}. "
                       "Rerun the same command to resume (--fresh to start over).", err=True)
            sys.exit(130)
        doc = finish(prepared, metrics)
        doc["stream"]["resumed_at_batch"] = start
        if kw["plot"]:  # drawn before the result is written, so a failed plot leaves nothing half-done
            from tta.plotting import plot_error_curve  # noqa: PLC0415  (matplotlib is optional)

            plot_error_curve(doc, kw["plot"])
        write_json(output, doc)
        partial.unlink(missing_ok=True)
    if note:
        click.echo(note, err=True)
    click.echo(markdown_table(doc))
    click.echo(f"\nresult: {output}", err=True)
