"""``tta list methods|models|shifts|corruptions|norms``."""
from __future__ import annotations

import click

#: the keys of tta.catalog.CATALOGS, repeated so that `tta --help` does not import torch
WHAT = ("corruptions", "methods", "models", "norms", "shifts")


@click.command("list")
@click.argument("what", type=click.Choice(WHAT))
def list_cmd(what: str) -> None:
    """Print the registered names of WHAT with their documented defaults.

    \b
    tta list methods     every adapter, its options and per-dataset defaults
    tta list shifts
    """
    from tta.catalog import CATALOGS  # noqa: PLC0415  (imports torch)

    for line in CATALOGS[what]():
        click.echo(line)
