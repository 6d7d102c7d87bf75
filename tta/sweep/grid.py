"""A sweep grid: the axes of many runs, from a TOML file or from flags, expanded into cells.

A grid file (TOML)::

    datasets = ["cifar10"]
    shifts = ["continual", "continual@0.1", "continual@sorted", "iid"]   # shift[@delta | @sorted]
    severities = [5]
    seeds = [1, 2]

    [[models]]
    name = "resnet20"
    checkpoint = "models/resnet20.th"

    [[methods]]
    name = "tent"
    variants = [{}, { lr = 0.0001 }]        # one cell per variant; {} is the defaults

    [run]                                   # any `tta run` setting, applied to every cell
    n_examples = 300
    data_dir = "data"

``methods`` entries may also be plain names. Relative paths in the file are read
relative to the file. Every combination of the axes is one cell.
"""
from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import InputError
from ..pipeline.config import RunConfig
from ..names import parse_shift
from ..precheck import MAX_CELLS, check_settings

#: RunConfig fields that grid axes set; everything else may come from [run] or flags
AXES = ("dataset", "model", "checkpoint", "method", "options", "shift", "delta", "sort_labels", "severity", "seed")
_PATH_FIELDS = ("data_dir", "checkpoint", "order_file", "frost_dir")


@dataclass(frozen=True)
class Grid:
    """The axes of a sweep. Each list holds the values of one axis; ``run`` the settings every cell shares."""

    datasets: tuple[str, ...] = ("auto",)
    models: tuple[tuple[str | None, str | None], ...] = ((None, None),)  # (model, checkpoint)
    methods: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = (("source", ()),)  # (name, options)
    shifts: tuple[str, ...] = ("continual",)
    severities: tuple[int, ...] = (5,)
    seeds: tuple[int, ...] = (2020,)
    run: tuple[tuple[str, Any], ...] = ()

    def size(self) -> int:
        """How many cells the grid has, without listing them."""
        return (len(self.datasets) * len(self.models) * len(self.methods) * len(self.shifts) * len(self.severities)
                * len(self.seeds))

    def cells(self) -> list[RunConfig]:
        """Every combination of the axes as a run configuration, in a stable order; every setting checked first
        (``tta.precheck``), so a bad name or value fails the whole grid before any cell runs."""
        if self.size() > MAX_CELLS:
            raise InputError(
                f"the grid has {self.size():,} cells, more than the {MAX_CELLS:,} one sweep plans (each cell's stream "
                "is fingerprinted before anything runs); split it into several sweeps sharing one --store")
        shared = dict(self.run)
        out = []
        for dataset, (model, ckpt), (method, opts), shift, severity, seed in itertools.product(
            self.datasets, self.models, self.methods, self.shifts, self.severities, self.seeds
        ):
            name, delta, sort_labels = parse_shift(shift)
            cfg = {**shared, "dataset": dataset, "method": method, "shift": name, "severity": severity, "seed": seed,
                   "options": {**shared.get("options", {}), **dict(opts)}}
            if model is not None:
                cfg["model"] = model
            if ckpt is not None:
                cfg["checkpoint"] = ckpt
            if delta is not None:
                cfg["delta"] = delta
            if sort_labels:
                cfg["sort_labels"] = True
            out.append(RunConfig(**check_settings(cfg, where="sweep grid")))
        return out


def split_list(text: str | None) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _freeze(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(options.items()))


def _check_run_settings(run: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in fields(RunConfig)}
    bad = sorted(set(run) - known)
    if bad:
        raise InputError(f"{where}: unknown run setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    axes = sorted(set(run) & {"method", "shift", "seed", "severity", "dataset"})
    if axes:
        raise InputError(f"{where}: {', '.join(axes)} are axes of the grid; list them as methods/shifts/seeds/... instead")


def _axis(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str) -> tuple:
    """The list ``raw[key]`` (``[default]`` when absent) as a tuple; anything else is one error line."""
    values = raw.get(key, [default])
    example = {int: "[1, 2]", str: '["a", "b"]'}.get(kind if isinstance(kind, type) else str, "[...]")
    if not isinstance(values, list) or not values:
        raise InputError(f"{where}: {key} must be a non-empty list, e.g. {key} = {example}; got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, kind):
            what = "integers" if kind is int else "names" if kind is str else "names or tables"
            raise InputError(f"{where}: {key} must hold {what}, e.g. {key} = {example}; got {v!r}")
    return tuple(values)


def _methods(entries: Iterable[Any], where: str) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append((entry, ()))
            continue
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise InputError(f"{where}: each [[methods]] entry needs a name, e.g. name = \"tent\"; got {entry!r}")
        variants = entry.get("variants") or [entry.get("options", {})]
        if not isinstance(variants, list) or not all(isinstance(v, Mapping) for v in variants):
            raise InputError(f"{where}: variants of {entry['name']!r} must be a list of tables, e.g. "
                             f"variants = [{{}}, {{ lr = 0.0001 }}]; got {variants!r}")
        out += [(entry["name"], _freeze(v)) for v in variants]
    return tuple(out)


def read_grid(path: str | Path) -> Grid:
    """Read a TOML grid file (see the module docstring); relative paths are taken from the file's folder."""
    path = Path(path).expanduser()
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read grid file {path} ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"grid file {path} is not valid TOML ({exc}); see `tta sweep --help` for an example") from None
    known = {"datasets", "models", "methods", "shifts", "severities", "seeds", "run"}
    bad = sorted(set(raw) - known)
    if bad:
        raise InputError(f"grid file {path}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    here = path.parent

    def local(value: Any) -> Any:
        return str((here / Path(value).expanduser()).resolve()) if isinstance(value, str) and value else value

    run = dict(raw.get("run", {}))
    _check_run_settings(run, f"grid file {path} [run]")
    for key in _PATH_FIELDS:
        if key in run:
            run[key] = local(run[key])
    models: list[tuple[str | None, str | None]] = []
    for m in _axis(raw, "models", (str, dict), None, f"grid file {path}") if "models" in raw else []:
        if isinstance(m, str):
            models.append((m, None))
        else:
            models.append((m.get("name"), local(m.get("checkpoint"))))
    where = f"grid file {path}"
    grid = Grid(
        datasets=_axis(raw, "datasets", str, "auto", where),
        models=tuple(models) or ((None, None),),
        methods=_methods(_axis(raw, "methods", (str, dict), "source", where), where),
        shifts=_axis(raw, "shifts", str, "continual", where),
        severities=_axis(raw, "severities", int, 5, where),
        seeds=_axis(raw, "seeds", int, 2020, where),
        run=_freeze(run),
    )
    for s in grid.shifts:
        parse_shift(s)
    return grid


def override(grid: Grid, *, methods: list[str] | None = None, shifts: list[str] | None = None,
             seeds: list[int] | None = None, severities: list[int] | None = None, datasets: list[str] | None = None,
             model: str | None = None, checkpoint: str | None = None, run: Mapping[str, Any] | None = None) -> Grid:
    """``grid`` with the axes and run settings given as flags replacing the file's."""
    for s in shifts or []:
        parse_shift(s)
    models = grid.models
    if model is not None or checkpoint is not None:
        models = tuple((model or m, checkpoint or c) for m, c in grid.models)
    merged = {**dict(grid.run), **(run or {})}
    _check_run_settings(merged, "sweep flags")
    return Grid(
        datasets=tuple(datasets) if datasets else grid.datasets,
        models=models,
        methods=tuple((m, ()) for m in methods) if methods else grid.methods,
        shifts=tuple(shifts) if shifts else grid.shifts,
        severities=tuple(severities) if severities else grid.severities,
        seeds=tuple(seeds) if seeds else grid.seeds,
        run=_freeze(merged),
    )

