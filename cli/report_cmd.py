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
@click.option("--cost", "cost_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Take every variant's cost from this benchmarks/bench_methods.py Markdown table instead of the "
                   "runs' own timing (one source for every page and table).")
def report_cmd(paths: tuple[Path, ...], outdir: Path, published: Path | None, cost_file: Path | None) -> None:
    """Write a static leaderboard site for the stores (tta sweep --store) or result files PATHS.

    A PATH may also be an earlier report's leaderboard.json (an archive whose result files are gone):
    its rows join the site, pooled by label with result files of other seeds.

    \b
    tta report runs.db -o site && open site/index.html
    """
    from tta.errors import InputError  # noqa: PLC0415
    from tta.report.leaderboard import load_results  # noqa: PLC0415
    from tta.report import load_published, write_site  # noqa: PLC0415
    from tta.report.view import read_archive  # noqa: PLC0415

    archives, rest = [], []
    for path in paths:
        archive = read_archive(path)
        (archives.append(archive) if archive is not None else rest.append(path))
    docs = load_results(rest) if rest else []
    if not docs and not archives:
        raise InputError(f"no finished results in {', '.join(map(str, paths))}; run `tta sweep --store DB ...` first")
    index = write_site(docs, outdir, load_published(published), archives=archives, cost_file=cost_file)
    click.echo(f"report of {len(docs)} results{f' and {len(archives)} archived reports' if archives else ''} "
               f"written to {index}")
