"""``tta list methods|models|shifts|corruptions|norms``."""
from __future__ import annotations

import click

from tta.catalog import CATALOGS


@click.command("list")
@click.argument("what", type=click.Choice(sorted(CATALOGS)))
def list_cmd(what: str) -> None:
    """Print the registered names of WHAT with their documented defaults."""
    for line in CATALOGS[what]():
        click.echo(line)
