"""``tta sweep``: run a grid of cells into a result store; ``tta store import``/``export``: result files in and out."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import click

from .flag_values import parse_delta, parse_key_values
from .run_cmd import run_cmd
from .signals import sigterm_as_interrupt

# `tta run` options that a sweep takes as axes or that belong to a single run
_NOT_SHARED = {"method", "shift", "seed", "severity", "dataset", "model", "checkpoint", "output", "plot",
               "export_order", "checkpoint_every", "fresh", "quiet"}


def _run_settings(ctx: click.Context, kw: dict) -> dict:
    """The `tta run` options given on the command line, as RunConfig fields (defaults are the grid's)."""
    out = {}
    for name in kw:
        if name in _NOT_SHARED or ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = kw[name]
        if name == "options":
            value = parse_key_values(value, "--option", "lr=0.001")
        elif name == "norm_options":
            value = parse_key_values(value, "--norm-option", "num_groups=8")
        elif name == "domains":
            value = [d.strip() for d in value.split(",") if d.strip()]
        elif name == "delta":
            value = parse_delta(value)
        elif name == "run_workers":
            name = "workers"
        out[name] = value
    return out


@click.command("sweep", context_settings={"max_content_width": 110})
@click.argument("grid_file", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="Result database (SQLite), created if absent.")
@click.option("--methods", default=None, help="Comma-separated methods, e.g. source,tbn,tent (replaces the grid file's).")
@click.option("--shifts", default=None, help="Comma-separated shifts: continual,continual@0.1,continual@sorted,iid.")
@click.option("--seeds", default=None, help="Comma-separated seeds, e.g. 1,2,3.")
@click.option("--severities", default=None, help="Comma-separated severities.")
@click.option("--datasets", default=None, help="Comma-separated datasets.")
@click.option("--model", default=None, help="Backbone of every cell (replaces the grid's models).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Weights of --model.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--jobs", "-j", default=None, type=int, help="Cells at once. [default: 1 local; the cluster's CPUs (GPUs) on ray]")
@click.option("--address", default=None, help="Ray cluster to join (ray backend); a local one is started otherwise.")
@click.option("--retry-failed", is_flag=True, help="Run cells that failed before again.")
@click.option("--dry-run", is_flag=True, help="List the cells and their status; run nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def sweep_cmd(ctx: click.Context, grid_file: str | None, store_path: str, methods: str | None, shifts: str | None,
              seeds: str | None, severities: str | None, datasets: str | None, model: str | None,
              checkpoint: str | None, backend: str, jobs: int | None, address: str | None, retry_failed: bool,
              dry_run: bool, quiet: bool, **kw) -> None:
    """Run every cell of a grid (GRID_FILE, TOML, and/or the axis flags) into the result store.

    Finished cells are never run again: rerunning the command resumes a killed sweep,
    and several sweeps may share one --store. Any `tta run` option (e.g. --n-examples,
    --data-dir, --option) applies to every cell.

    \b
    tta sweep --store runs.db --methods source,tbn --shifts continual,iid --seeds 1,2 \\
        --model resnet20 --checkpoint resnet20.th --n-examples 300
    tta sweep grid.toml --store runs.db --jobs 2
    tta sweep grid.toml --store runs.db --backend ray --address auto
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    from tta.errors import InputError  # noqa: PLC0415
    from tta.sweep import Grid, make_backend, override, plan, read_grid, sweep  # noqa: PLC0415
    from tta.sweep.grid import split_list  # noqa: PLC0415
    from tta.sweep.store import Store  # noqa: PLC0415

    grid = read_grid(grid_file) if grid_file else Grid()
    if not grid_file and not methods:
        raise InputError("name the cells: a grid file (tta sweep GRID.toml ...) or --methods (e.g. --methods source,tbn)")
    try:
        seed_list = [int(s) for s in split_list(seeds)]
        severity_list = [int(s) for s in split_list(severities)]
    except ValueError:
        raise InputError("--seeds and --severities take comma-separated integers, e.g. --seeds 1,2,3") from None
    grid = override(grid, methods=split_list(methods), shifts=split_list(shifts), seeds=seed_list,
                    severities=severity_list, datasets=split_list(datasets), model=model, checkpoint=checkpoint,
                    run=_run_settings(ctx, kw))
    cells = plan(grid.cells())
    with Store(store_path) as store:
        status = store.statuses()
        if dry_run:
            for c in cells:
                click.echo(f"{status.get(c.id, 'todo'):8} {c.id}  {c.label()}  {c.command}")
            return
        todo = sum(status.get(c.id) != "done" for c in cells)
        click.echo(f"{len(cells)} cells, {len(cells) - todo} done before, {todo} to run on {backend}", err=True)
        pool = make_backend(backend, jobs, address) if todo else None
        bar = tqdm(total=len(cells), initial=len(cells) - todo, disable=quiet, desc="tta sweep", unit="cell")

        def on_event(event, counts) -> None:
            c = event.cell
            if event.doc is not None:
                m = event.doc["metrics"]
                line = f"done   {c.label():40} error {m['mean_domain_error']:5.1f}%  {m['images_per_s']:7.0f} img/s  {c.id}"
            else:
                line = f"FAILED {c.label():40} {event.error}  {c.id}"
            bar.write(line) if not quiet else click.echo(line, err=True)
            bar.set_postfix(done=counts["done"], running=counts["running"], failed=counts["failed"])
            bar.update(1)

        stopped = False
        try:
            with sigterm_as_interrupt():  # SIGTERM stops a sweep as Ctrl-C does
                summary = sweep(cells, store, pool, retry_failed=retry_failed, on_event=on_event) if pool else None
        except KeyboardInterrupt:
            stopped = True
        finally:
            bar.close()
            if pool is not None:
                pool.close()
        if stopped:
            click.echo("sweep stopped: the running cells saved their progress and their claims were given back; "
                       "rerun the same command to resume", err=True)
            sys.exit(130)
        if summary is None:
            click.echo("nothing to run: every cell is done", err=True)
            return
        click.echo(f"ran {len(summary.ran)}, failed {len(summary.failed)}, done before {summary.already_done}"
                   + (f", failed before (use --retry-failed) {len(summary.failed_before)}" if summary.failed_before else "")
                   + (f", running in another sweep {len(summary.running_elsewhere)}" if summary.running_elsewhere else "")
                   + (f", stopped by a signal (rerun to resume) {len(summary.stopped)}" if summary.stopped else ""),
                   err=True)
        if summary.failed or summary.failed_before:  # failed cells remain: the grid is not finished
            raise SystemExit(1)


# every `tta run` option that is not an axis becomes a sweep option applied to all cells
for _param in run_cmd.params:
    if _param.name in _NOT_SHARED:
        continue
    _p = copy.copy(_param)
    if _p.name == "workers":  # --workers of tta run is DataLoader workers; --jobs is the sweep's parallelism
        _p.name, _p.opts = "run_workers", ["--loader-workers"]
    sweep_cmd.params.append(_p)


def _public(doc: dict) -> dict:
    """A result document without the bookkeeping keys (``_path``, ``_cell``) that loading it added."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


@click.group("store")
def store_cmd() -> None:
    """Manage a result store (the SQLite database of `tta sweep`).

    \b
    tta store import runs.db tta-results/
    tta store export runs.db cells/
    """


@store_cmd.command("import")
@click.argument("store_path", type=click.Path(dir_okay=False))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def store_import_cmd(store_path: str, paths: tuple[Path, ...]) -> None:
    """Add the `tta run` result files (or folders of them) PATHS to the store as finished cells.

    \b
    tta store import runs.db tta-results/ extra/r.json
    """
    from tta.pipeline.setting import setting_of  # noqa: PLC0415
    from tta.report.leaderboard import load_results  # noqa: PLC0415
    from tta.schema import IMPORTABLE, check  # noqa: PLC0415
    from tta.sweep.cells import cell_id, rerun_command  # noqa: PLC0415
    from tta.sweep.store import Store  # noqa: PLC0415

    docs = load_results(paths)
    added = 0
    with Store(store_path) as store:
        for doc in docs:
            check(doc, IMPORTABLE, what=doc.get("_path", "a result"),
                  fix="import only results written by `tta run` or exported by `tta store export`")
            config = (doc.get("runtime") or {}).get("config") or {}
            sha = doc["model"].get("checkpoint_sha256") if config.get("checkpoint") else None
            cid = cell_id(config, dataset=doc["data"]["dataset"], fingerprint=doc["stream"]["fingerprint"],
                          checkpoint_sha256=sha, version=doc["versions"]["tta"])
            added += store.import_result(cid, _public(doc), config, rerun_command(config), setting=setting_of(doc).title())
    click.echo(f"imported {added} of {len(docs)} results into {store_path} ({len(docs) - added} were there already)")


@store_cmd.command("export")
@click.argument("store_path", type=click.Path(dir_okay=False, exists=True))
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
def store_export_cmd(store_path: str, outdir: Path) -> None:
    """Write every finished cell of the store to OUTDIR as one `tta run` result file per cell (<cell id>.json).

    The files are what `tta report` and `tta store import` read, so a board can be kept as plain files
    (in version control, say) and its store rebuilt from them; a later sweep into the rebuilt store
    skips those cells. Files already there with the same content are left untouched.

    \b
    tta store export runs.db cells/
    """
    from tta.atomic import write_text  # noqa: PLC0415
    from tta.errors import InputError  # noqa: PLC0415
    from tta.safepath import child  # noqa: PLC0415
    from tta.sweep.store import Store, is_store  # noqa: PLC0415

    if not is_store(store_path):
        raise InputError(f"{store_path} is not a result store; pass the database of `tta sweep --store`")
    with Store(store_path, readonly=True) as store:
        docs = store.documents()
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {outdir} ({exc.strerror or exc}); pass a writable folder") from None
    # every name is checked before anything is written: a crafted cell id (../x, /abs/x) stops the export
    fix = "the store was edited by hand or damaged; delete that cell (or restore the store) and export again"
    paths = [child(outdir, f"{doc['_cell']['id']}.json", what="cell id", fix=fix) for doc in docs]
    written = 0
    for doc, path in zip(docs, paths):
        text = json.dumps(_public(doc), indent=1, sort_keys=True) + "\n"
        try:
            if path.exists() and path.read_text() == text:
                continue
        except (OSError, UnicodeDecodeError):
            pass
        write_text(path, text)
        written += 1
    click.echo(f"exported {len(docs)} finished cells of {store_path} to {outdir} ({written} new or changed)")
