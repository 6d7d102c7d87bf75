"""Where the cells of a sweep run: ``local`` worker processes, or tasks on a Ray cluster.

A backend has ``slots`` (how many cells run at once), ``submit(config, partial)``
returning a handle, ``wait(handles)`` returning ``[(handle, outcome)]`` for the cells
that finished (``outcome`` as from ``tta.sweep.worker.run_cell``), and ``close()``.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
from typing import Any

from ..atomic import write_json
from ..errors import InputError
from .ray_reaper import reaped_cluster
from .worker import run_cell

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this worker when the sweep process that spawned it dies.

    A worker in its own session (below) is out of reach of the signals that stop the sweep's
    process group, so without this a killed sweep left its workers running their cells to the
    end, each holding a dataset and a model, with nobody to record the result. SIGTERM, not
    SIGKILL: a running cell saves its progress after the current batch (``tta.pipeline.resume``).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # the parent may have died before prctl took effect: then we were re-parented already
    if _orphaned():
        os._exit(1)


def _orphaned() -> bool:
    parent = multiprocessing.parent_process()
    return parent is not None and os.getppid() != parent.pid


def _run_local_cell(config: dict[str, Any], partial: str | None) -> dict[str, Any]:
    try:
        outcome = run_cell(config, partial)
    except KeyboardInterrupt as exc:  # SIGTERM/SIGINT stopped the cell after a batch, progress saved
        outcome = {"stopped": str(exc)}
    if _orphaned():
        # the sweep died: nobody reads the result, and handing it to the pool's queue could block
        # this process forever. A finished cell's result is left beside its progress file for the
        # next sweep to record (``tta.sweep.backends.finished_path``), so its work is not lost.
        if "doc" in outcome and partial is not None:
            try:
                write_json(finished_path(partial), outcome["doc"])
            except Exception:  # noqa: BLE001  (last act of an orphan: nothing to report to)
                pass
        os._exit(0)
    return outcome


def finished_path(partial: str | os.PathLike) -> str:
    """Where an orphaned worker leaves the result of a cell it finished: ``<partial>.result.json``."""
    return os.fspath(partial) + ".result.json"


def _init_worker() -> None:
    _die_with_parent()
    # Each worker in its own session: Linux schedules CPU fairly between sessions (autogroup), so
    # workers left in the sweep's session would share one session's share of a busy machine, and
    # a second worker would only halve the speed of the first. Ray's workers get their own too.
    if hasattr(os, "setsid"):
        try:
            os.setsid()
        except OSError:
            pass
    # one torch thread per worker: N workers share the cores instead of oversubscribing them
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch  # noqa: PLC0415

    torch.set_num_threads(1)


class LocalBackend:
    """``jobs`` worker processes on this machine (spawned, one torch thread each)."""

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise InputError(f"--jobs must be >= 1, got {jobs}")
        self.slots = jobs
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.slots, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker)

    def submit(self, config: dict[str, Any], partial: str | None) -> cf.Future:
        try:
            return self.pool.submit(_run_local_cell, config, partial)
        except cf.process.BrokenProcessPool:
            # a worker died abruptly (OOM killer, SIGKILL): its cells were reported failed; go on with a new pool
            log.warning("a sweep worker died abruptly; starting new worker processes")
            # wait=True: the old pool's management thread closes its pipes as it ends; left running it
            # could close descriptors the new pool has just been given
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = self._new_pool()
            return self.pool.submit(_run_local_cell, config, partial)

    def wait(self, handles: list[cf.Future]) -> list[tuple[cf.Future, dict[str, Any]]]:
        """Finished cells. A worker that died abruptly breaks the whole pool, failing every cell it ran;
        which one's worker died is unknown, so each comes back as ``{"requeue": why}`` for the sweep to
        run again (from its saved progress), within its retry budget."""
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        out = []
        for fut in done:
            try:
                out.append((fut, fut.result()))
            except cf.process.BrokenProcessPool as exc:
                out.append((fut, {"requeue": f"a sweep worker died abruptly ({exc})"}))
            except Exception as exc:  # noqa: BLE001  (a worker process that died takes its cell with it)
                out.append((fut, {"error": f"worker process failed: {type(exc).__name__}: {exc}"}))
        return out

    def close(self, cancel: bool = False, grace_s: float = 60.0) -> None:
        """Wait for the running cells, or (``cancel``) stop them now: their claims are released by the caller.

        Cancelled cells get SIGTERM, save their progress after the current batch and exit;
        a worker still alive ``grace_s`` later is killed.
        """
        if not cancel:
            self.pool.shutdown(wait=True)
            return
        # shutdown(cancel_futures=True) only drops queued cells; running ones would go on (and the
        # interpreter would wait for them at exit) although the caller has released their claims
        workers = list((getattr(self.pool, "_processes", None) or {}).values())
        manager = getattr(self.pool, "_executor_manager_thread", None)  # shutdown(wait=False) forgets it
        self.pool.shutdown(wait=False, cancel_futures=True)
        if any(proc.is_alive() for proc in workers):
            log.warning("stopping the running cells after their current batch (their progress is saved)")
        for proc in workers:
            if proc.is_alive():
                proc.terminate()
        for proc in workers:
            proc.join(timeout=grace_s)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
        # the pool's management thread closes the pool's pipes as it ends: let it finish before anyone
        # opens new descriptors (a new pool), which could otherwise be closed under them
        if manager is not None:
            manager.join(timeout=grace_s)


class RayBackend:
    """Ray core tasks: one CPU (and one GPU where the cluster has GPUs) per cell; a task whose worker dies is retried."""

    def __init__(self, address: str | None = None, jobs: int | None = None, max_retries: int = 3) -> None:
        try:
            import ray  # noqa: PLC0415
        except ImportError:
            raise InputError("the ray backend needs Ray; pip install 'tta-toolkit[ray]' (or use --backend local)") from None
        self.ray = ray
        if not ray.is_initialized():
            # an existing cluster at --address; else a local one on this machine, whose processes a
            # reaper kills when this process dies (Ray leaves some of them running for a minute)
            own = address in (None, "local")
            with reaped_cluster() if own else contextlib.nullcontext():
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        resources = ray.cluster_resources()
        gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        self.remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=max_retries)(run_cell)
        self.slots = jobs or max(1, int(resources.get("GPU", 0)) if gpus else int(resources.get("CPU", 1)))
        self.pending: set[Any] = set()
        log.info("ray backend: %s, %d cell(s) at once, %d GPU(s) per cell", resources, self.slots, gpus)

    def submit(self, config: dict[str, Any], partial: str | None) -> Any:
        ref = self.remote.remote(config, partial)
        self.pending.add(ref)
        return ref

    def wait(self, handles: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        out = []
        self.pending.difference_update(ready)
        for ref in ready:
            try:
                out.append((ref, self.ray.get(ref)))
            except self.ray.exceptions.RayError as exc:  # retries exhausted, or the task could not run
                out.append((ref, {"error": f"ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"}))
        return out

    def close(self, cancel: bool = False, grace_s: float = 60.0) -> None:
        """Nothing to do after a finished sweep: the cluster (ours or --address's) outlives it.

        ``cancel`` (a stopped sweep): Ray's ``cancel`` raises the interrupt of SIGINT in each running
        cell, which stops after its current batch and saves its progress (``tta.pipeline.resume``); this waits
        up to ``grace_s`` for that, so the driver does not take a local cluster down with it first.
        """
        if not cancel or not self.pending:
            return
        refs = list(self.pending)
        log.warning("stopping the running cells after their current batch (their progress is saved)")
        for ref in refs:
            try:
                self.ray.cancel(ref, force=False)
            except Exception as exc:  # noqa: BLE001  (best effort: a finished or lost task)
                log.debug("ray.cancel: %s", exc)
        try:
            self.ray.wait(refs, num_returns=len(refs), timeout=grace_s)
        except Exception as exc:  # noqa: BLE001
            log.debug("ray.wait after cancel: %s", exc)
        self.pending.clear()


def make_backend(name: str, jobs: int | None = None, address: str | None = None) -> LocalBackend | RayBackend:
    if name == "local":
        return LocalBackend(jobs or 1)
    if name == "ray":
        return RayBackend(address=address, jobs=jobs)
    raise InputError(f"unknown sweep backend {name!r}; choose one of: {', '.join(BACKENDS)}")
