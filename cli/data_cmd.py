"""``tta data``: where datasets are looked for, check a CIFAR-C folder, download one."""
from __future__ import annotations

from pathlib import Path

import click

from tta.errors import DataError


def default_data_dir() -> Path:
    from tta.data.paths import default_data_dir as find  # noqa: PLC0415  (the readers import torch)

    return find()

_DATASET = click.option("--dataset", type=click.Choice(["cifar10", "cifar100"]), default="cifar10", show_default=True)
_DATA_DIR = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                         help="[default: $TTA_DATA or ~/.cache/tta/data]")


@click.group("data")
def data_cmd() -> None:
    """Fetch and check datasets.

    \b
    tta data where
    tta data fetch --data-dir data            CIFAR-10-C, 2.9 GB, MD5-checked, resumable
    tta data check --data-dir data --domains fog,snow
    """


@data_cmd.command("where")
def where() -> None:
    """Print the folder `tta run` reads datasets from by default.

    \b
    tta data where
    """
    click.echo(default_data_dir())


@data_cmd.command("check")
@_DATASET
@_DATA_DIR
@click.option("--domains", default=None, help="Comma-separated corruptions to check. [default: all the folder should hold: "
              "the 15 benchmark ones, or those its tta-corrupt.json lists]")
def check(dataset: str, data_dir: str | None, domains: str | None) -> None:
    """Check every file of a CIFAR-C folder (shapes, dtypes, sizes); exit 2 if any is missing or broken.

    A folder written by `tta corrupt` is checked against its manifest (its corruptions and severities).

    \b
    tta data check --data-dir data
    tta data check --data-dir data --dataset cifar100 --domains fog
    """
    from tta.data.check import check_cifar_c, fix_for  # noqa: PLC0415  (tta.data imports torch)

    root = Path(data_dir) if data_dir else default_data_dir()
    names = [d.strip() for d in domains.split(",") if d.strip()] if domains else None
    rows = check_cifar_c(root, dataset, names)
    for name, ok, detail in rows:
        click.echo(f"{'ok ' if ok else 'BAD'} {name:24s} {detail}")
    bad = [name for name, ok, _ in rows if not ok]
    if bad:
        raise DataError(f"{len(bad)} file(s) missing or broken: {', '.join(bad)}; {fix_for(root, dataset)}")


@data_cmd.command("fetch")
@_DATASET
@_DATA_DIR
def fetch(dataset: str, data_dir: str | None) -> None:
    """Download CIFAR-10-C / CIFAR-100-C from Zenodo (MD5-checked, resumable) and unpack it.

    \b
    tta data fetch --data-dir data
    tta data fetch --data-dir data --dataset cifar100
    """
    from tta.data.download import download_cifar_c, network_available  # noqa: PLC0415

    root = Path(data_dir) if data_dir else default_data_dir()
    if not network_available():
        raise DataError("zenodo.org cannot be reached from here; download the archive elsewhere and unpack it into " + str(root))
    click.echo(download_cifar_c(root, dataset))
