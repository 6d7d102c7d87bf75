"""Run the cells of a grid into a result store, skipping those already done.

``plan`` fingerprints every cell's stream (data and order only, no model) and gives
it its content id; ``sweep`` claims cells one at a time in the store, hands them to
a backend, and records each result or error as it arrives. Finished cells are never
run again; a cell claimed by a sweep that died is taken over; a failed cell keeps
its error until ``retry_failed`` runs it again.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from ..pipeline.config import RunConfig
from ..pipeline.results import sha256_file
from ..pipeline.setting import setting_of
from ..schema import check_result
from .backends import finished_path
from .cells import Cell, cell_id
from .store import Store

log = logging.getLogger(__name__)

_STREAM_FIELDS = ("dataset", "data_dir", "shift", "domains", "severity", "batch_size", "seed", "n_examples", "delta",
                  "sort_labels", "order_file", "imagenet_subset", "frost_dir", "download", "protocol")


def plan(configs: Iterable[RunConfig]) -> list[Cell]:
    """Each configuration with its content id; streams shared by several cells are built once."""
    from ..pipeline.prepare import prepare_stream  # noqa: PLC0415  (torch: the store's readers do without it)
    from ..runtime import versions  # noqa: PLC0415

    version = versions()["tta"]
    streams: dict[str, tuple[str, str, dict[str, Any]]] = {}
    shas: dict[str, str] = {}
    cells = []
    for config in configs:
        key = repr([getattr(config, f) for f in _STREAM_FIELDS])
        if key not in streams:
            resolved, source, stream, _ = prepare_stream(config)
            # the per-dataset defaults (batch size, ImageNet subset) as the run's result records them
            streams[key] = (source.dataset, stream.fingerprint(),
                            {"batch_size": resolved.batch_size, "imagenet_subset": resolved.imagenet_subset})
        dataset, fingerprint, resolved_fields = streams[key]
        config = replace(config, **resolved_fields)
        sha = None
        if config.checkpoint:
            path = str(Path(config.checkpoint).expanduser())
            sha = shas.setdefault(path, sha256_file(path) if Path(path).is_file() else "missing:" + path)
        cid = cell_id(config, dataset=dataset, fingerprint=fingerprint, checkpoint_sha256=sha, version=version)
        cells.append(Cell(config, cid, dataset, fingerprint))
    return cells


@dataclass
class Event:
    """A cell that finished (``doc``) or failed (``error``), for progress lines."""

    cell: Cell
    doc: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class SweepSummary:
    """What a sweep did: cells it ran, found done, found failed (not retried) or left to another sweep."""

    total: int = 0
    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    already_done: int = 0
    failed_before: list[str] = field(default_factory=list)
    running_elsewhere: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.failed or self.failed_before or self.running_elsewhere or self.stopped)


def _left_by_orphan(partial: str, cell: Cell) -> dict[str, Any] | None:
    """The result an orphaned worker left for ``cell``, when it is a valid result of that very cell."""
    path = Path(finished_path(partial))
    if not path.is_file():
        return None
    try:
        doc = check_result(json.loads(path.read_text()), str(path))
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s (%s); running the cell again", path, exc)
        return None
    if doc["stream"]["fingerprint"] != cell.fingerprint or doc["method"]["name"] != cell.config.method:
        log.warning("ignoring %s: it is the result of another cell; running this one again", path)
        return None
    return doc


#: times a cell is run again after its worker died abruptly before it counts as failed
MAX_REQUEUES = 2


def partial_dir(store: Store) -> Path:
    """Where cells save their progress, beside the database."""
    return store.path.with_name(store.path.name + ".partial")


def sweep(
    cells: list[Cell],
    store: Store,
    backend: Any,
    *,
    retry_failed: bool = False,
    on_event: Callable[[Event, dict[str, int]], None] | None = None,
) -> SweepSummary:
    """Run every cell of ``cells`` not yet done in ``store`` on ``backend``; see the module docstring.

    ``on_event(event, counts)`` is called after each finished cell with the counts
    ``done``/``running``/``failed`` over this sweep's cells.
    """
    summary = SweepSummary(total=len(cells))
    ids = {c.id for c in cells}
    status = {k: v for k, v in store.statuses().items() if k in ids}
    counts = {"done": sum(v == "done" for v in status.values()), "running": 0,
              "failed": sum(v == "failed" for v in status.values())}
    if retry_failed:
        counts["failed"] = 0
    parts = partial_dir(store)
    queue = [c for c in cells if status.get(c.id) != "done"]
    summary.already_done = len(cells) - len(queue)
    in_flight: dict[Any, Cell] = {}
    requeued: dict[str, int] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < backend.slots:
                cell = queue.pop(0)
                if store.claim(cell.id, asdict(cell.config), cell.command, retry_failed=retry_failed):
                    partial = str(parts / f"{cell.id}.partial.pt")
                    doc = _left_by_orphan(partial, cell)
                    if doc is not None:  # finished by a worker whose sweep died before recording it
                        store.finish(cell.id, doc, setting=setting_of(doc).title())
                        Path(finished_path(partial)).unlink(missing_ok=True)
                        summary.ran.append(cell.id)
                        counts["done"] += 1
                        if on_event is not None:
                            on_event(Event(cell, doc=doc), dict(counts))
                        continue
                    parts.mkdir(parents=True, exist_ok=True)
                    in_flight[backend.submit(asdict(cell.config), partial)] = cell
                    counts["running"] += 1
                    continue
                now = store.statuses().get(cell.id)
                if now == "done":
                    summary.already_done += 1
                    counts["done"] += 1 if status.get(cell.id) != "done" else 0
                elif now == "failed":
                    summary.failed_before.append(cell.id)
                else:
                    summary.running_elsewhere.append(cell.id)
            if not in_flight:
                break
            for handle, outcome in backend.wait(list(in_flight)):
                cell = in_flight.pop(handle)
                counts["running"] -= 1
                if "requeue" in outcome:
                    # its worker, or a sibling sharing its pool, died: run it again from its saved progress,
                    # unless it keeps dying (then it is the cell that kills its worker, e.g. out of memory)
                    requeued[cell.id] = requeued.get(cell.id, 0) + 1
                    if requeued[cell.id] <= MAX_REQUEUES:
                        log.warning("%s: %s; running it again", cell.label(), outcome["requeue"])
                        store.release([cell.id])
                        queue.insert(0, cell)
                        continue
                    outcome = {"error": f"{outcome['requeue']}, {requeued[cell.id]} times running this cell"}
                if "stopped" in outcome:
                    # a signal stopped the cell (its progress is saved): not a failure, the next sweep resumes it
                    store.release([cell.id])
                    summary.stopped.append(cell.id)
                    continue
                if "doc" in outcome:
                    store.finish(cell.id, outcome["doc"], setting=setting_of(outcome["doc"]).title())
                    summary.ran.append(cell.id)
                    counts["done"] += 1
                    event = Event(cell, doc=outcome["doc"])
                else:
                    error = outcome["error"] + ("\n" + outcome["traceback"] if outcome.get("traceback") else "")
                    store.fail(cell.id, error)
                    summary.failed.append(cell.id)
                    counts["failed"] += 1
                    event = Event(cell, error=outcome["error"])
                if on_event is not None:
                    on_event(event, dict(counts))
    except BaseException:
        # an interrupted sweep gives its claims back, so the next one reruns exactly those cells
        store.release([c.id for c in in_flight.values()])
        backend.close(cancel=True)
        raise
    return summary
