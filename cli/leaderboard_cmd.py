"""``tta leaderboard``: the results of many runs as ranked tables, one per evaluation setting."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("leaderboard")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True,
              help="Markdown tables, long-format CSV, or JSON records.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here (atomically) instead of printing.")
def leaderboard_cmd(paths: tuple[Path, ...], fmt: str, output: Path | None) -> None:
    """Rank the methods of the result files, folders or stores (tta sweep --store) PATHS (default: tta-results).

    Results are grouped by setting (data, model checkpoint, shift, severity, batch
    size, label correlation, domains); seeds of one method are averaged. Rows
    sharing a seed must share the stream fingerprint, or the table says so.

    \b
    tta leaderboard runs.db
    tta leaderboard tta-results/ --format csv -o board.csv
    """
    from tta.errors import InputError  # noqa: PLC0415  (keeps `tta --help` fast)
    from tta.report.leaderboard import build, load_results, render  # noqa: PLC0415
    from tta.atomic import write_bytes  # noqa: PLC0415
    from tta.pipeline.outputs import check_writable  # noqa: PLC0415

    if output is not None:
        check_writable(output)  # before reading anything, so a bad --output costs nothing
    paths = paths or (Path("tta-results"),)
    docs = load_results(paths)
    if not docs:
        raise InputError(
            f"no tta results under {', '.join(map(str, paths))}; "
            "write some with `tta run --output <folder>/<name>.json`"
        )
    text = render(build(docs), fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_bytes(output, text.encode())
        click.echo(f"leaderboard of {len(docs)} results written to {output}")
