"""``tta report``: the results of a store (or result files) as a static HTML site, plus Markdown/CSV/JSON."""
from __future__ import annotations

from pathlib import Path

import click

from .aliases import with_aliases


@click.command("report", cls=with_aliases({"--html": "--output"}))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", "outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the site into (index.html, one page per setting, leaderboard.md/csv/json).")
@click.option("--published", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Published reference numbers (tta.published JSON). [default: benchmarks/published_reference.json "
                   "of a source checkout]")
def report_cmd(paths: tuple[Path, ...], outdir: Path, published: Path | None) -> None:
    """Write a static leaderboard site for the stores (tta sweep --store) or result files PATHS.

    \b
    tta report runs.db -o site && open site/index.html
    """
    from tta.errors import InputError  # noqa: PLC0415
    from tta.leaderboard import load_results  # noqa: PLC0415
    from tta.report import load_published, write_site  # noqa: PLC0415

    docs = load_results(paths)
    if not docs:
        raise InputError(f"no finished results in {', '.join(map(str, paths))}; run `tta sweep --store DB ...` first")
    index = write_site(docs, outdir, load_published(published))
    click.echo(f"report of {len(docs)} results written to {index}")
