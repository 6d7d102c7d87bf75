"""Resumable runs: the state of an interrupted online pass, saved beside its result file.

A long run (hours for WRN-28-10 on a CPU) saves ``<output>.partial.pt`` every few
minutes: the next batch number, the adapter's ``state_dict`` (which holds everything the method
carries across batches: student, teacher, memory, counters, and as extra state the
optimizer moments and the method's random generator), torch's RNG state and the
running counts. Rerunning the same
command resumes from there; the key (stream fingerprint, method, hyperparameters,
model hash, and the identity of the data: each domain file's size and content digest,
and the ``tta corrupt`` manifest) must match, so a changed command or different data
starts afresh, while the same files with new modification times (copied back,
re-extracted, a re-provisioned mount) resume. The file is written atomically and removed once the
result is written. On SIGINT/SIGTERM ``stop_on_signals`` lets the current batch
finish, so the saved state is exact.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn

from ..atomic import write_bytes
from ..errors import WriteError
from .evaluate import RunInterrupted, Tally

if TYPE_CHECKING:
    from .prepare import Prepared

log = logging.getLogger(__name__)

FORMAT = "tta.partial-run/2"


def partial_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".partial.pt")


def _canonical(options: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((str(k), repr(v)) for k, v in options.items())


def data_identity(source: Any, domains: Any) -> list[Any]:
    """What tells one copy of a dataset from another: the manifest and each domain's content digest.

    The stream fingerprint only covers names, severities and sizes, which every copy
    of CIFAR-10-C shares; two different copies must not be mixed in one result. Content
    rather than modification times (:meth:`tta.data.domain.Domain.identity`), so the same files given
    new times (copied back, re-extracted, a re-provisioned mount) resume.
    """
    ident: list[Any] = [repr(sorted((str(k), repr(v)) for k, v in source.describe().items()))]
    ident.extend(dom.identity() for dom in domains)
    return ident


def run_key(fingerprint: str, method: str, hparams: dict[str, Any], model: dict[str, Any],
            data: list[Any] | None = None, precision: str = "fp32") -> str:
    """What a saved partial run must match: stream, method, hyperparameters, checkpoint, norm layer, data and
    autocast precision (fp32 left out of the key, so progress saved before precision existed still resumes)."""
    norm = (model.get("norm"), _canonical(model.get("norm_options") or {}))
    key = (fingerprint, method, _canonical(hparams), model.get("checkpoint_sha256"), norm, data)
    return repr(key if precision == "fp32" else (*key, precision))


def key_of(prepared: Prepared) -> str:
    """``run_key`` of a prepared run."""
    cfg = prepared.config
    return run_key(prepared.stream.fingerprint(), cfg.method, prepared.hparams, prepared.model_info,
                   data_identity(prepared.source, prepared.stream.domains), cfg.precision)


def save_partial(path: Path, key: str, next_batch: int, tally: Tally, adapted: nn.Module) -> None:
    state = {
        "format": FORMAT,
        "key": key,
        "next_batch": next_batch,
        "tally": tally.state(),
        "adapter": adapted.state_dict(),
        "rng": torch.get_rng_state(),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(path, buf.getvalue())
    log.info("saved progress at batch %d to %s", next_batch, path)


def load_partial(path: Path, key: str, adapted: nn.Module) -> tuple[int, Tally] | None:
    """Restore ``adapted`` from ``path`` and return (next batch, tally), or None if it does not apply."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unreadable file means: start afresh)
        log.warning("ignoring unreadable progress file %s (%s)", path, exc)
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        log.warning("ignoring %s: not a tta progress file; delete it or pass --fresh", path)
        return None
    if state.get("key") != key:
        log.warning("ignoring %s: it belongs to a different run (stream, data, method, settings or model differ)", path)
        return None
    before = copy.deepcopy(adapted.state_dict())
    try:
        tally = Tally.from_state(state["tally"])
        next_batch = int(state["next_batch"])
        adapted.load_state_dict(state["adapter"])
        rng = state["rng"]
        torch.set_rng_state(rng)
    except Exception as exc:  # noqa: BLE001  (a malformed file must not break every rerun)
        adapted.load_state_dict(before)
        log.warning("ignoring malformed progress file %s (%s: %s); starting afresh", path, type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "")
        return None
    return next_batch, tally


class ProgressSaver:
    """``evaluate``'s checkpoint callback: the run's progress into ``path``.

    A failed write (a full disk) costs the resume point, not the run: it is warned about once and the run goes on.
    """

    def __init__(self, path: Path, key: str, adapted: nn.Module) -> None:
        self.path, self.key, self.adapted, self.failed = path, key, adapted, False

    def __call__(self, next_batch: int, tally: Tally) -> None:
        try:
            save_partial(self.path, self.key, next_batch, tally, self.adapted)
        except WriteError as exc:
            if not self.failed:
                self.failed = True
                log.warning("%s; the run goes on without saving progress", exc)

    @property
    def kept(self) -> Path | None:
        """Where the progress is, unless a write failed."""
        return None if self.failed else self.path


class RunStopped(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a run between two batches; its progress is saved in ``partial``."""

    def __init__(self, stop: RunInterrupted, partial: Path | None) -> None:
        where = f"; progress saved to {partial}" if partial is not None else ""
        super().__init__(f"stopped before batch {stop.next_batch} of {stop.total}{where}")
        self.next_batch, self.total, self.partial = stop.next_batch, stop.total, partial

    def __reduce__(self):  # rebuilt from its fields, so it crosses process boundaries (sweep workers)
        return type(self), (RunInterrupted(self.next_batch, self.total), self.partial)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[Callable[[], bool]]:
    """Yield ``should_stop()``: true once SIGINT or SIGTERM arrived. A second Ctrl-C (SIGINT) interrupts at once.

    A repeated SIGTERM does not: the kernel sends a sweep worker its parent-death SIGTERM once
    for every thread of the dying parent (``PR_SET_PDEATHSIG``), and that burst must still let
    the batch finish and the progress be saved. Only the main thread can install handlers;
    elsewhere ``should_stop`` stays false.
    """
    hits: list[int] = []

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        hits.append(signum)
        if len(hits) > 1 and signum == signal.SIGTERM:
            return  # already stopping after this batch
        if len(hits) > 1:
            raise KeyboardInterrupt
        log.warning("%s received: stopping after the current batch (Ctrl-C again to stop at once)", signal.Signals(signum).name)

    previous = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield lambda: bool(hits)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def resume_point(path: Path | None, key: str, adapted: nn.Module, *, fresh: bool = False) -> tuple[int, Tally | None]:
    """Where a run starts: (next batch, saved tally) from ``path`` when it applies, else (0, None).

    ``fresh`` ignores saved progress; a file of another run (different key) is ignored too.
    """
    if path is None or fresh:
        return 0, None
    resumed = load_partial(path, key, adapted)
    return resumed if resumed else (0, None)


def discard_partial(path: Path | None) -> None:
    """Remove the progress file of a run whose result has been written."""
    if path is not None:
        path.unlink(missing_ok=True)
