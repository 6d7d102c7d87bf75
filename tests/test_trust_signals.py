"""Signals: a killed sweep leaves each running cell's progress saved; a dead worker fails no sibling (#32 rows 9-11)."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import random_cifar_c
from test_sweep import _alive_after, _catches_sigterm, _children

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; parent-death signals")


def _sweep_args(tmp_path: Path, db: Path) -> list[str]:
    """Two CoTTA cells (seeds 1, 2) at once on random images, long enough to be killed mid-cell."""
    random_cifar_c(tmp_path / "data", 100)
    return _sweep_args_for(tmp_path, db)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tta", "sweep", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _two_running_cells(proc: subprocess.Popen) -> list[int]:
    """The two workers, once both run a cell's batches (their SIGTERM handler is installed then)."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        workers = [w for w in _children(proc.pid) if _catches_sigterm(w)]
        if len(workers) == 2:
            time.sleep(2)  # a few batches in
            return workers
        time.sleep(0.1)
    pytest.fail(f"the cells never started: {proc.stderr.read() if proc.poll() is not None else ''}")


def _cells(db: Path) -> list[tuple]:
    return sqlite3.connect(db).execute("SELECT id, status, attempts, doc FROM cells").fetchall()


def test_sigkill_of_the_sweep_leaves_the_progress_of_every_running_cell(tmp_path):
    db = tmp_path / "runs.db"
    proc = _start(_sweep_args(tmp_path, db))
    workers = _two_running_cells(proc)
    os.kill(proc.pid, signal.SIGKILL)  # no handler, no cleanup in the sweep itself
    proc.wait()
    # the kernel's parent-death signal: each worker stops after its batch, saves its progress and exits
    assert not _alive_after(workers, 120)
    saved = sorted((tmp_path / "runs.db.partial").glob("*.partial.pt"))
    assert len(saved) == 2, proc.stderr.read()
    # the rerun resumes both cells from there
    rerun = subprocess.run([sys.executable, "-m", "tta", "sweep", *_sweep_args_for(tmp_path, db)], capture_output=True,
                           text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert rerun.returncode == 0, rerun.stderr
    rows = _cells(db)
    assert len(rows) == 2 and {r[1] for r in rows} == {"done"}
    assert all(json.loads(r[3])["stream"]["resumed_at_batch"] > 0 for r in rows)


def _sweep_args_for(tmp_path: Path, db: Path) -> list[str]:
    """The same arguments on the data already made under ``tmp_path``."""
    root, ckpt = tmp_path / "data", tmp_path / "data" / "rand20.pt"
    return ["--store", str(db), "--methods", "cotta", "--shifts", "continual", "--seeds", "1,2", "--datasets",
            "cifar10", "--data-dir", str(root), "--model", "resnet20", "--checkpoint", str(ckpt), "--domains",
            "gaussian_noise", "--n-examples", "100", "-b", "4", "-q", "--jobs", "2"]


def test_a_worker_killed_outright_fails_neither_its_cell_nor_its_sibling(tmp_path):
    db = tmp_path / "runs.db"
    proc = _start(_sweep_args(tmp_path, db))
    victim, sibling = _two_running_cells(proc)
    os.kill(victim, signal.SIGKILL)  # as the OOM killer would
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "FAILED" not in err and "running it again" in err, err
    rows = _cells(db)
    assert len(rows) == 2 and {r[1] for r in rows} == {"done"}, rows


def test_a_burst_of_sigterm_lets_the_batch_finish_but_ctrl_c_twice_stops_at_once():
    from tta.pipeline.resume import stop_on_signals

    with stop_on_signals() as should_stop:
        for _ in range(3):  # the parent-death signal, once per thread of the dying parent
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        assert should_stop()
    with pytest.raises(KeyboardInterrupt):
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)


def _ray_cell_processes() -> list[int]:
    out = []
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"ray::run_cell" in proc.read_bytes():
                out.append(int(proc.parent.name))
        except OSError:
            continue
    return out


@pytest.mark.slow
def test_a_stopped_ray_sweep_leaves_the_progress_of_its_running_cell(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed; pip install 'tta-toolkit[ray]'")
    from tta.sweep.backends import RayBackend

    root, ckpt = random_cifar_c(tmp_path / "data", 100)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 2**20)
    try:
        backend = RayBackend(jobs=1)
        partial = tmp_path / "cell.partial.pt"
        # gradual: 9 severity blocks of 100 images in batches of 2, minutes of CoTTA, so it is cut mid-way
        ref = backend.submit(dict(method="cotta", shift="gradual", dataset="cifar10", data_dir=str(root),
                                  model="resnet20", checkpoint=str(ckpt), domains=["gaussian_noise"], batch_size=2,
                                  seed=1), str(partial))
        deadline = time.time() + 120
        while not _ray_cell_processes() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(8)  # past loading, into the batches
        backend.close(cancel=True)  # what a Ctrl-C'd `tta sweep --backend ray` does with its running cells
        assert partial.is_file()
        with pytest.raises(ray.exceptions.RayError):
            ray.get(ref)
    finally:
        ray.shutdown()


def _one_source_cell(tmp_path: Path):
    """A planned one-cell sweep on random images: (cell, store path, the cell's progress path, its folder made)."""
    from tta.pipeline.config import RunConfig
    from tta.sweep import plan
    from tta.sweep.dispatch import partial_dir
    from tta.sweep.store import Store

    root, ckpt = random_cifar_c(tmp_path / "data", 20)
    config = RunConfig(method="source", dataset="cifar10", data_dir=str(root), model="resnet20",
                       checkpoint=str(ckpt), domains=["gaussian_noise"], batch_size=10, seed=1)
    (cell,) = plan([config])
    db = tmp_path / "runs.db"
    partial = partial_dir(Store(db)) / f"{cell.id}.partial.pt"
    partial.parent.mkdir(parents=True)
    return cell, db, partial


def test_a_cell_finished_by_an_orphaned_worker_is_recorded_by_the_next_sweep(tmp_path, monkeypatch):
    from tta.sweep import backends, sweep
    from tta.sweep.store import Store
    from tta.sweep.worker import run_cell

    cell, db, partial = _one_source_cell(tmp_path)
    # the worker finishes the cell just as its sweep dies: it leaves the result, then exits
    monkeypatch.setattr(backends, "_orphaned", lambda: True)
    monkeypatch.setattr(backends.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit):
        backends._run_local_cell(dict(vars(cell.config)), str(partial))
    left = Path(backends.finished_path(partial))
    assert left.is_file()

    class NoRuns:  # the next sweep must record it, not run it again
        slots = 1

        def submit(self, *a):
            raise AssertionError("the finished cell was run again")

        def close(self, cancel=False):
            pass

    with Store(db) as store:
        summary = sweep([cell], store, NoRuns())
        (doc,) = store.documents()
    assert summary.ran == [cell.id] and not left.exists()
    expected = run_cell(dict(vars(cell.config)))["doc"]
    assert doc["metrics"]["domain_errors"] == expected["metrics"]["domain_errors"]


def test_a_left_result_of_another_cell_is_not_recorded(tmp_path):
    from tta.sweep import backends, sweep
    from tta.sweep.store import Store

    from test_trust_paths import result_doc

    cell, db, partial = _one_source_cell(tmp_path)
    Path(backends.finished_path(partial)).write_text(json.dumps(result_doc()))  # fingerprint f0: not this cell

    class Records:
        slots = 1
        submitted = []

        def submit(self, config, partial):
            self.submitted.append(config)
            return 0

        def wait(self, handles):
            return [(0, {"error": "stub"})]

        def close(self, cancel=False):
            pass

    backend = Records()
    with Store(db) as store:
        sweep([cell], store, backend)
    assert len(backend.submitted) == 1  # run again, not taken from the file
