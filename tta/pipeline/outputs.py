"""The files of a run: where its result, order and plot go, checked before the run and written after it.

Every path is checked before any image is adapted on (stage one of ``tta.run``), so a bad one
costs nothing; the result and its plot are written last (stage six), atomically through ``tta.atomic``.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .. import atomic
from ..errors import InputError, WriteError
from .result_name import DEFAULT_RESULTS_DIR, default_result_name

if TYPE_CHECKING:
    from .prepare import Prepared


@dataclass(frozen=True)
class AutoOutput:
    """Pass as ``output`` to write ``<folder>/<default name>``: readable, plus a digest of the result-determining
    configuration, so different configurations never share a file (``tta.pipeline.result_name``)."""

    folder: str = DEFAULT_RESULTS_DIR


#: where ``tta run`` writes when no ``--output`` is given
DEFAULT_OUTPUT = AutoOutput()
#: what matplotlib's savefig writes without extra backends
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


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
    for an ``AutoOutput``, its folder and the run's default name (``result_name.default_result_name``)."""
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


def check_targets(output: str | Path | AutoOutput | None, export_order: str | Path | None,
                  plot: str | Path | None) -> None:
    """Every output path of a run, checked before it starts: placeholders, writability, the plot's format."""
    if output is not None and not isinstance(output, AutoOutput):
        fill_placeholders(output, dict.fromkeys(PLACEHOLDERS, "x"))  # only documented placeholders
    for path in (output, export_order, plot):
        if path is not None and not isinstance(path, AutoOutput) and "{" not in str(path):
            check_writable(path)
    check_plot_support(plot)


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


def write_outputs(doc: dict[str, Any], out: Path | None, plot: str | Path | None, partial: Path | None) -> None:
    """The plot, then the result: a failed plot leaves nothing half-done, a failed result write says where it went."""
    if plot is not None:
        from .plotting import plot_error_curve  # noqa: PLC0415  (matplotlib is optional)

        plot_error_curve(doc, plot)
    if out is not None:
        try:
            write_result(out, doc)
        except WriteError as exc:
            raise WriteError(_rescue(doc, out, partial, exc)) from None


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
