"""Entry point of the ``tta`` console script."""
from __future__ import annotations

import logging
import sys

import click

from tta import __version__
from tta.errors import TTAError

from .corrupt_cmd import corrupt_cmd
from .data_cmd import data_cmd
from .leaderboard_cmd import leaderboard_cmd
from .list_cmd import list_cmd
from .train_cmd import train_cmd
from .report_cmd import report_cmd
from .run_cmd import run_cmd
from .sweep_cmd import store_cmd, sweep_cmd


class _Group(click.Group):
    """Turns tta's user-facing errors into one clean line and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TTAError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tta")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """tta: test-time adaptation of pretrained classifiers under distribution shift.

    \b
    tta list methods              the adapters and their defaults
    tta run --method unmix-tns --shift continual
    tta sweep --store runs.db --methods source,tbn --seeds 1,2
    tta leaderboard runs.db       rank the results of many runs
    tta report runs.db --html site
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


cli.add_command(corrupt_cmd)
cli.add_command(data_cmd)
cli.add_command(leaderboard_cmd)
cli.add_command(list_cmd)
cli.add_command(train_cmd)
cli.add_command(report_cmd)
cli.add_command(run_cmd)
cli.add_command(store_cmd)
cli.add_command(sweep_cmd)
