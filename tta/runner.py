"""``tta.run``: one run, owned by the library: prepare, resume, adapt online, write the result.

The command line (``tta run``), sweeps (``tta sweep``) and notebooks all call
``run(config, output=...)``; the CLI only parses flags and prints. Output paths
are checked before any image is adapted on, progress of a long run is saved
beside the result (``<output>.partial.pt``) and resumed by the same call, and
every file is written atomically through ``tta.atomic``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from . import atomic
from .errors import InputError, WriteError
from .evaluate import RunInterrupted, evaluate
from .experiment import Prepared, RunConfig, finish, prepare
from .lock import output_lock
from .result_name import DEFAULT_RESULTS_DIR, default_result_name
from .results import check_overwrite, configuration
from .resume import (data_identity, discard_partial, partial_path, resume_point, run_key, save_partial,
                     stop_on_signals)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoOutput:
    """Pass as ``output`` to write ``<folder>/<default name>``: readable, plus a digest of the result-determining
    configuration, so different configurations never share a file (``tta.result_name``)."""

    folder: str = DEFAULT_RESULTS_DIR


#: where ``tta run`` writes when no ``--output`` is given
DEFAULT_OUTPUT = AutoOutput()
#: what matplotlib's savefig writes without extra backends
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


class RunStopped(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a run between two batches; its progress is saved in ``partial``."""

    def __init__(self, stop: RunInterrupted, partial: Path | None) -> None:
        where = f"; progress saved to {partial}" if partial is not None else ""
        super().__init__(f"stopped before batch {stop.next_batch} of {stop.total}{where}")
        self.next_batch, self.total, self.partial = stop.next_batch, stop.total, partial

    def __reduce__(self):  # rebuilt from its fields, so it crosses process boundaries (sweep workers)
        return type(self), (RunInterrupted(self.next_batch, self.total), self.partial)


@dataclass
class RunOutcome:
    """A finished run: its result document, where it was written, and the batch it resumed at."""

    doc: dict[str, Any]
    output: Path | None
    resumed_at_batch: int


def as_config(config: RunConfig | Mapping[str, Any]) -> RunConfig:
    """A ``RunConfig`` from itself or a mapping of its fields; unknown keys are an error naming them."""
    if isinstance(config, RunConfig):
        return config
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InputError(f"unknown run setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return RunConfig(**dict(config))


def check_writable(path: str | Path) -> Path:
    """Fail before a run starts when ``path`` cannot be written (a folder, unwritable, a name too long)."""
    path = Path(path).expanduser()
    if len(os.fsencode(path.name)) > atomic.name_max(path.parent):
        raise InputError(f"output name {path.name[:40]}... is {len(os.fsencode(path.name))} bytes, longer than the "
                         f"{atomic.name_max(path.parent)} the file system leaves for it (with {path.name[:8]}..."
                         ".partial.pt beside it); pass a shorter --output")
    try:
        is_dir = path.is_dir()
    except OSError as exc:
        raise InputError(f"cannot write the result to {path} ({exc.strerror or exc}); pass another --output") from None
    if is_dir:
        raise InputError(f"output path {path} is a directory; pass a file name such as {path / 'result.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or str(exc))
        raise InputError(f"cannot write the result to {path} ({why}); pass --output in a writable folder") from None
    return path


#: the placeholders an output name may hold; everything else in it is literal
PLACEHOLDERS = ("dataset", "method", "shift", "seed")
_FIELD = re.compile(r"\{([^{}]*)\}")


def fill_placeholders(output: str | Path, values: Mapping[str, Any]) -> str:
    """``output`` with each ``{dataset}``/``{method}``/``{shift}``/``{seed}`` replaced by its value, as plain text.

    Nothing is evaluated (no attribute or index lookups, no format specs); any other brace is an
    ``InputError`` naming the placeholders, so ``r-{0}.json`` or ``r-{`` never becomes a traceback.
    """
    text = str(output)
    for match in _FIELD.finditer(text):
        if match.group(1) not in PLACEHOLDERS:
            raise InputError(f"--output {text}: {{{match.group(1)}}} is not a placeholder; use only "
                             f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} or a literal name without braces")
    filled = _FIELD.sub(lambda m: str(values[m.group(1)]), text)
    if "{" in _FIELD.sub("", text) or "}" in _FIELD.sub("", text):
        raise InputError(f"--output {text}: unmatched brace; use only "
                         f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} or a literal name without braces")
    return filled


def resolve_output(output: str | Path | AutoOutput, prepared: Prepared, configuration: dict[str, Any]) -> Path:
    """``output`` with ``{dataset}``, ``{method}``, ``{shift}`` and ``{seed}`` filled in from the prepared run;
    for an ``AutoOutput``, its folder and the run's default name (``tta.result_name.default_result_name``)."""
    if isinstance(output, AutoOutput):
        name = default_result_name(
            dataset=prepared.source.dataset, model=prepared.model_info.get("name"), method=prepared.config.method,
            shift=prepared.config.shift, stream=prepared.stream.describe(), configuration=configuration)
        return Path(output.folder).expanduser() / name
    cfg = prepared.config
    values = {"dataset": prepared.source.dataset, "method": cfg.method, "shift": cfg.shift, "seed": cfg.seed}
    return Path(fill_placeholders(output, values)).expanduser()


def check_plot_support(plot: str | Path | None) -> None:
    """Fail before a run starts when ``plot`` names a format matplotlib cannot write, or matplotlib is missing."""
    if plot is None:
        return
    suffix = Path(plot).suffix.lstrip(".").lower()
    if suffix not in PLOT_FORMATS:
        raise InputError(f"--plot {plot}: cannot draw a .{suffix or '(no suffix)'} file; "
                         f"end the name in one of .{', .'.join(PLOT_FORMATS)}")
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        raise InputError("--plot needs matplotlib; pip install 'tta-toolkit[plot]' or drop --plot") from None


def write_result(path: Path, doc: dict[str, Any]) -> None:
    """The result document as JSON, atomically."""
    atomic.write_json(path, doc)


def run(
    config: RunConfig | Mapping[str, Any],
    output: str | Path | AutoOutput | None = None,
    *,
    resume: bool = True,
    partial: str | Path | None = None,
    checkpoint_every_s: float = 120.0,
    export_order: str | Path | None = None,
    plot: str | Path | None = None,
    progress: bool = False,
    overwrite: bool = False,
    confirm_download: Callable[[str], bool] | None = None,
    notify: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Run ``config`` once and return its result; write it to ``output`` when given.

    ``output`` may hold ``{dataset}``/``{method}``/``{shift}``/``{seed}``, or be ``AutoOutput()`` for the default
    name (``DEFAULT_OUTPUT``: ``tta-results/<readable>-<configuration digest>.json``).
    With ``resume``, progress is saved to ``partial`` (default ``<output>.partial.pt``)
    every ``checkpoint_every_s`` seconds, and a rerun of the same run continues from
    there; ``resume=False`` starts over. While it runs, ``output`` is locked against a
    second run; a result of another configuration there is replaced only with
    ``overwrite``. SIGINT/SIGTERM stop the run after the current batch with its progress
    saved and raise ``RunStopped``. ``notify`` receives the user-facing notes
    (data found, demo, resuming); by default they are logged.
    """
    config = as_config(config)
    say = notify or log.info
    # Every output path is checked before the run, so a bad one costs nothing.
    if output is not None and not isinstance(output, AutoOutput):
        fill_placeholders(output, dict.fromkeys(PLACEHOLDERS, "x"))  # only documented placeholders
    for path in (output, export_order, plot):
        if path is not None and not isinstance(path, AutoOutput) and "{" not in str(path):
            check_writable(path)
    check_plot_support(plot)
    prepared = prepare(config, confirm_download=confirm_download)
    for note in prepared.notes:
        say(note)
    if prepared.source.is_demo:
        from .results import DEMO_BANNER  # noqa: PLC0415

        say(f"*** {DEMO_BANNER} ***")
    # one notion of "the same configuration": it names default outputs and guards existing ones
    same = configuration(prepared.config.method, prepared.hparams, prepared.model_info, prepared.source.describe(),
                         prepared.stream.fingerprint(), prepared.config.precision)
    out = check_writable(resolve_output(output, prepared, same)) if output is not None else None
    if partial is None and out is not None:
        partial = partial_path(out)
    partial = Path(partial) if partial is not None else None
    with contextlib.ExitStack() as stack:
        if out is not None:
            stack.enter_context(output_lock(out))
            replaced = check_overwrite(out, same, overwrite)
        else:
            replaced = None
        if export_order is not None:  # written only once every check passed, and never over a result
            check_order_target(export_order, out, overwrite)
            prepared.stream.export_order(export_order)
        doc, start = _online_pass(prepared, partial, resume, checkpoint_every_s, progress, say)
        if plot is not None:  # drawn before the result is written, so a failed plot leaves nothing half-done
            from .plotting import plot_error_curve  # noqa: PLC0415  (matplotlib is optional)

            plot_error_curve(doc, plot)
        if out is not None:
            try:
                write_result(out, doc)
            except WriteError as exc:
                raise WriteError(_rescue(doc, out, partial, exc)) from None
        discard_partial(partial)
    if replaced:
        say(replaced)
    return RunOutcome(atomic.json_safe(doc), out, start)


def check_order_target(path: str | Path, output: Path | None, overwrite: bool = False) -> None:
    """Refuse an ``--export-order`` path that is the run's output, or an existing file that is not an order."""
    path = Path(path).expanduser()
    if output is not None and path.resolve() == Path(output).resolve():
        raise InputError(f"--export-order {path} is also the --output; pass another file name for the order")
    if not path.exists() or overwrite:
        return
    if path.suffix == ".json":
        try:
            is_order = json.loads(path.read_text()).get("format") == "tta.order"
        except (OSError, ValueError, AttributeError):
            is_order = False
    else:
        is_order = path.suffix == ".npy"
    if not is_order:
        raise InputError(f"--export-order {path} exists and is not an exported order (a result?); pass another "
                         "file name, or --overwrite to replace it")


def _rescue(doc: dict[str, Any], out: Path, partial: Path | None, exc: WriteError) -> str:
    """Where a finished result went when ``out`` could not be written: a file in the temp folder, else kept progress."""
    spare = Path(tempfile.gettempdir()) / f"tta-unsaved-{os.getpid()}-{out.name[:100]}"
    try:
        write_result(spare, doc)
        return f"{exc}; the result is saved in {spare} instead: move it to {out} once there is space"
    except (WriteError, OSError):
        pass
    kept = f"; progress is kept in {partial}: free space and rerun the same command to resume" \
        if partial is not None and partial.is_file() else ""
    return f"{exc}{kept}"


def _online_pass(prepared: Prepared, partial: Path | None, resume: bool, checkpoint_every_s: float,
                 progress: bool, say: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    """The online loop, resumed from ``partial`` when it holds this run's progress; (result, start batch)."""
    config = prepared.config
    key = run_key(prepared.stream.fingerprint(), config.method, prepared.hparams, prepared.model_info,
                  data_identity(prepared.source, prepared.stream.domains), config.precision)
    start, tally = resume_point(partial, key, prepared.adapted, fresh=not resume)
    if start:
        say(f"resuming at batch {start} of {len(prepared.stream)} from {partial} (--fresh to start over)")
    warned: list[bool] = []

    def save(nxt: int, t: Any) -> None:
        try:
            save_partial(partial, key, nxt, t, prepared.adapted)
        except WriteError as exc:  # a full disk costs the resume point, not the run
            if not warned:
                warned.append(True)
                log.warning("%s; the run goes on without saving progress", exc)

    save = save if partial is not None else None
    try:
        with stop_on_signals() as should_stop:
            metrics = evaluate(
                prepared.adapted, prepared.stream, device=prepared.device, progress=progress, start_batch=start,
                tally=tally, checkpoint=save, checkpoint_every_s=checkpoint_every_s, should_stop=should_stop,
            )
    except RunInterrupted as stop:
        raise RunStopped(stop, partial if not warned else None) from None
    doc = finish(prepared, metrics)
    doc["stream"]["resumed_at_batch"] = start
    return doc, start
