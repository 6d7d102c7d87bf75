"""``tta.run``: one run, owned by the library, as stages called in order; none calls back.

1. ``outputs.check_targets``: every output path checked before the run, so a bad one costs nothing;
2. ``prepare.prepare``: settings -> data, stream, model and the adapter around it;
3. ``resume.resume_point``: where the online pass starts (saved progress beside the result);
4. ``evaluate.evaluate``: the online pass, saving progress as it goes and stopping cleanly on SIGINT/SIGTERM;
5. ``results.record``: the result document;
6. ``outputs.write_outputs``: the plot and the result file, atomically.

The command line (``tta run``), sweeps (``tta sweep``) and notebooks all call
``run(config, output=...)``; the CLI only parses flags and prints.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import atomic
from ..lock import output_lock
from .config import RunConfig, as_config
from .evaluate import RunInterrupted, evaluate
from .outputs import AutoOutput, check_order_target, check_targets, check_writable, resolve_output, write_outputs
from .prepare import prepare
from .results import DEMO_BANNER, check_overwrite, configuration_of_run, record
from .resume import (ProgressSaver, RunStopped, discard_partial, key_of, partial_path, resume_point,
                     stop_on_signals)

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """A finished run: its result document, where it was written, and the batch it resumed at."""

    doc: dict[str, Any]
    output: Path | None
    resumed_at_batch: int


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
    check_targets(output, export_order, plot)
    prepared = prepare(config, confirm_download=confirm_download)
    for note in prepared.notes:
        say(note)
    if prepared.source.is_demo:
        say(f"*** {DEMO_BANNER} ***")
    same = configuration_of_run(prepared)
    out = check_writable(resolve_output(output, prepared, same)) if output is not None else None
    if partial is None and out is not None:
        partial = partial_path(out)
    partial = Path(partial) if partial is not None else None
    with contextlib.ExitStack() as stack:
        replaced = None
        if out is not None:
            stack.enter_context(output_lock(out))
            replaced = check_overwrite(out, same, overwrite)
        if export_order is not None:  # written only once every check passed, and never over a result
            check_order_target(export_order, out, overwrite)
            prepared.stream.export_order(export_order)
        key = key_of(prepared)
        start, tally = resume_point(partial, key, prepared.adapted, fresh=not resume)
        if start:
            say(f"resuming at batch {start} of {len(prepared.stream)} from {partial} (--fresh to start over)")
        saver = ProgressSaver(partial, key, prepared.adapted) if partial is not None else None
        try:
            with stop_on_signals() as should_stop:
                metrics = evaluate(
                    prepared.adapted, prepared.stream, device=prepared.device, progress=progress, start_batch=start,
                    tally=tally, checkpoint=saver, checkpoint_every_s=checkpoint_every_s, should_stop=should_stop,
                )
                # still under the handlers: a SIGTERM that lands after the last batch lets the finished run write
                # its result (one write away) instead of killing it between the pass and the file
                doc = record(prepared, metrics, resumed_at_batch=start)
                write_outputs(doc, out, plot, partial)
        except RunInterrupted as stop:
            raise RunStopped(stop, saver.kept if saver else None) from None
        discard_partial(partial)
    if replaced:
        say(replaced)
    return RunOutcome(atomic.json_safe(doc), out, start)
