"""What a sweep worker runs for one cell: ``tta.run`` in memory, failures returned rather than raised."""
from __future__ import annotations

import logging
import traceback
from typing import Any


def run_cell(config: dict[str, Any], partial: str | None = None) -> dict[str, Any]:
    """Run one cell; ``{"doc": ...}`` on success, ``{"error": "..."}`` (one line plus the traceback) on failure.

    ``partial`` is where the cell saves its progress, so a cell whose worker died
    continues from there when it is run again.
    """
    from ..pipeline.orchestrator import run  # noqa: PLC0415  (workers import torch once, here)

    show_warnings()
    try:
        outcome = run(config, output=None, partial=partial, resume=True, progress=False)
    except Exception as exc:  # noqa: BLE001  (a failed cell is recorded with its error, never dropped)
        tb = traceback.format_exc(limit=6)
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": tb}
    return {"doc": outcome.doc}


def show_warnings() -> None:
    """Print the library's warnings (progress file ignored, a collapse) on the worker's stderr.

    A worker is a fresh process with no logging set up, and tta's logger carries only a
    NullHandler, so without a handler here those warnings would vanish instead of
    reaching the sweep's output.
    """
    logging.getLogger("tta").setLevel(logging.WARNING)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s (sweep worker): %(message)s")
