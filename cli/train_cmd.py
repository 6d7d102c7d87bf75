"""``tta train``: train a source backbone with a chosen normalization layer."""
from __future__ import annotations

import click

from .aliases import with_aliases
from .flag_values import parse_key_values


@click.command("train", cls=with_aliases({"--data": "--data-dir", "--out": "--output", "--limit-train": "--n-examples",
                                          "--no-progress": "--quiet"}))
@click.option("--model", default="resnet20", show_default=True, help="Backbone name (tta list models).")
@click.option("--norm", default=None, help="Normalization layer (tta list norms); default: the model's (bn for CNNs, ln for ViTs).")
@click.option("--norm-option", "norm_option", multiple=True, metavar="KEY=VALUE", help="Option of the norm layer; repeatable.")
@click.option("--data-dir", "data", required=True, type=click.Path(), help="train_images.npy (labels beside it), its folder, or a torchvision CIFAR root.")
@click.option("--test-data", type=click.Path(), default=None, help="Test split for the clean accuracy (default: beside --data-dir).")
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--batch-size", default=128, show_default=True, type=int)
@click.option("--lr", default=None, type=float, help="Peak (onecycle) or initial (cosine) learning rate. [default: 0.2 for CNNs, 1e-3 for ViTs]")
@click.option("--schedule", type=click.Choice(["onecycle", "cosine"]), default="onecycle", show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None, help="[default: sgd (Nesterov) for CNNs, adamw for ViTs]")
@click.option("--weight-decay", default=None, type=float, help="[default: 5e-4 for CNNs, 0.05 for ViTs]")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--n-examples", "limit_train", type=int, default=None, help="Train on a seeded random subset of this many images.")
@click.option("--limit-test", type=int, default=None, help="Evaluate on the first N test images only.")
@click.option("--output", "-o", "out", required=True, type=click.Path(dir_okay=False), help="Final checkpoint (state_dict); the record goes beside it as .json.")
@click.option("--resume", is_flag=True, help="Continue from <out stem>.resume.pt written after each epoch.")
@click.option("--stop-after", type=int, default=None, help="End this run after epoch N (continue later with --resume).")
@click.option("--quiet", "-q", "no_progress", is_flag=True, help="No progress bar.")
def train_cmd(norm_option: tuple[str, ...], resume: bool, stop_after: int | None, no_progress: bool, **kwargs) -> None:
    """Train a backbone on a clean set and write a checkpoint plus a JSON record.

    \b
    tta train --model resnet20 --norm gn --data-dir data/cifar10/train_images.npy -o models/resnet20-gn.th
    tta train --model resnet20 --data-dir data/cifar10 -o r20.th --epochs 1 --n-examples 2000
    """
    from tta.training import TrainConfig, train  # noqa: PLC0415  (keeps `tta --help` fast)

    cfg = TrainConfig(norm_options=parse_key_values(norm_option, "--norm-option", "num_groups=8"), **kwargs)
    record = train(cfg, resume=resume, progress=not no_progress, stop_after=stop_after)
    if "stopped_after_epoch" in record:
        click.echo(f"stopped after epoch {record['stopped_after_epoch']}; continue with --resume ({record['resume_checkpoint']})")
        return
    click.echo(
        f"{cfg.model} norm={cfg.norm}: clean test accuracy {record['test_accuracy']:.4f} "
        f"on {record['test_images']} images; checkpoint {cfg.out}"
    )
