"""``tta run``: parse the flags, call ``tta.run``, print the result table."""
from __future__ import annotations

import re
import sys

import click

from tta.pipeline.config import DEFAULT_BATCH_SIZE, DEFAULT_SEED, DEFAULT_SEVERITY, RunConfig  # torch-free

from .aliases import AliasCommand
from .flag_values import check_checkpoint_every, parse_delta, parse_key_values, split_domains

_NUMBER = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


class _RunCommand(AliasCommand):
    """Lets ``--delta`` take a negative number, so ``--delta -1`` is told its range, not 'No such option'; the old
    ``--workers`` still parses, with a warning."""

    aliases = {"--workers": "--loader-workers"}

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


@click.command("run", cls=_RunCommand)
@click.option("--method", "-m", default=None,
              help="Adaptation method (tta list methods). [default: regime-aware, safe on i.i.d. and label-correlated "
                   "streams; source for a model it cannot run]")
@click.option("--shift", "-s", default="continual", show_default=True,
              help="iid | continual | mixed | gradual, optionally @DELTA or @sorted, e.g. continual@0.1 (tta list shifts).")
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
@click.option("--batch-size", "-b", default=None, type=int, help=f"[default: {DEFAULT_BATCH_SIZE}, 16 on ImageNet-C]")
@click.option("--n-examples", default=None, type=int,
              help="Subsample each domain to this many images (--protocol reference: the reference's NUM_EX).")
@click.option("--seed", default=DEFAULT_SEED, show_default=True, type=int,
              help="Drives every random draw: stream order, subsets, method initialization, torch.")
@click.option("--delta", default=None, is_flag=False, flag_value="default",
              help="Dirichlet label correlation (smaller: longer single-class runs; 0: class-sorted, as --sorted); alone: "
                   "0.1 CIFAR-10, 0.01 CIFAR-100 and ImageNet. Also as --shift continual@0.1.")
@click.option("--protocol", type=click.Choice(["tta", "reference"]), default="tta", show_default=True,
              help="Sample order: tta's own, or the reference framework's exactly (docs/running.md).")
@click.option("--sorted", "sort_labels", is_flag=True, help="Class-sorted stream.")
@click.option("--order", "order_file", type=click.Path(dir_okay=False), default=None, help="Replay this exported order (.json/.npy).")
@click.option("--export-order", type=click.Path(dir_okay=False), default=None, help="Write the stream order (.json/.npy).")
@click.option("--download", is_flag=True, help="Download CIFAR-C from Zenodo when it is not under --data-dir.")
@click.option("--threads", default=1, show_default=True, type=int, help="torch CPU threads (1 is fastest on shared 2-core CPUs).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Autocast precision of each step: bf16 on CPU or GPU, fp16 on GPU only.")
@click.option("--loader-workers", "workers", default=None, type=int,
              help="DataLoader workers. [default: 0 for arrays, 4 for image files]")
@click.option("--frost-dir", type=click.Path(file_okay=False), default=None,
              help="Frost textures for generated domains. [default: $TTA_FROST_DIR, else an imagecorruptions wheel]")
@click.option("--imagenet-subset", default=None,
              help="5000 (RobustBench list) | 50000 | FILE [default: 50000 with --delta/--sorted/--n-examples, else 5000]")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Result JSON. [default: tta-results/<dataset>-<model>-<method>-<shift>[-d<delta>]-s<seed>-<digest>.json, "
                   "<digest> a hash of everything that determines the numbers, so runs never share a default name]")
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
    tta run -m tent --shift mixed@0.1 --data-dir data --model resnet20 --checkpoint resnet20.th
    """
    from tta.precheck import check_settings  # noqa: PLC0415  (torch-free: mistakes fail before torch loads)

    settings = check_settings(dict(
        method=kw["method"], shift=kw["shift"], dataset=kw["dataset"], data_dir=kw["data_dir"],
        model=kw["model"], checkpoint=kw["checkpoint"], options=parse_key_values(kw["options"], "--option", "prior=16"),
        norm=kw["norm"], norm_options=parse_key_values(kw["norm_options"], "--norm-option", "num_groups=8"),
        domains=split_domains(kw["domains"]),
        severity=kw["severity"], batch_size=kw["batch_size"], n_examples=kw["n_examples"], seed=kw["seed"],
        delta=parse_delta(kw["delta"]), sort_labels=kw["sort_labels"], order_file=kw["order_file"],
        download=kw["download"], threads=kw["threads"], device=kw["device"], workers=kw["workers"],
        imagenet_subset=kw["imagenet_subset"], frost_dir=kw["frost_dir"], protocol=kw["protocol"],
        source_data=kw["source_data"], precision=kw["precision"],
    ))
    check_checkpoint_every(kw["checkpoint_every"])

    from tta.pipeline.orchestrator import run  # noqa: PLC0415  (torch; keeps `tta --help` fast)
    from tta.pipeline.outputs import DEFAULT_OUTPUT  # noqa: PLC0415
    from tta.pipeline.results import markdown_table  # noqa: PLC0415
    from tta.pipeline.resume import RunStopped  # noqa: PLC0415

    config = RunConfig(**settings)
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    try:
        outcome = run(
            config, kw["output"] or DEFAULT_OUTPUT, resume=not kw["fresh"], checkpoint_every_s=kw["checkpoint_every"],
            export_order=kw["export_order"], plot=kw["plot"], progress=not kw["quiet"], overwrite=kw["overwrite"],
            confirm_download=(lambda q: click.confirm(q, err=True)) if interactive else None,
            notify=lambda note: click.echo(note, err=True),
        )
    except RunStopped as stop:
        click.echo(f"{stop}. Rerun the same command to resume (--fresh to start over).", err=True)
        sys.exit(130)
    click.echo(markdown_table(outcome.doc))
    click.echo(f"\nresult: {outcome.output}", err=True)
