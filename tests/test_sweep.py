"""tta sweep: grids expand as written, cells are identified by content, and the store never loses or repeats a cell."""
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
from click.testing import CliRunner

from tta.cli.main import cli
from tta.errors import InputError
from tta.pipeline.config import RunConfig
from tta.sweep.store import Store
from tta.sweep import parse_shift, read_grid
from tta.sweep.cells import cell_id, rerun_command

REPO = Path(__file__).resolve().parents[1]


def test_grid_file_expands_every_axis_with_variants(tmp_path) -> None:
    (tmp_path / "grid.toml").write_text(
        'shifts = ["continual", "continual@0.1", "iid@sorted"]\nseeds = [1, 2]\n'
        '[[models]]\nname = "resnet20"\ncheckpoint = "ck/r20.th"\n'
        '[[methods]]\nname = "tent"\nvariants = [{}, { lr = 0.0001 }]\n'
        '[run]\nn_examples = 300\ndata_dir = "data"\n'
    )
    grid = read_grid(tmp_path / "grid.toml")
    cells = grid.cells()
    assert len(cells) == 2 * 3 * 2  # variants x shifts x seeds
    assert {(c.shift, c.delta, c.sort_labels) for c in cells} == {("continual", None, False), ("continual", 0.1, False),
                                                                   ("iid", None, True)}
    assert sorted({json.dumps(c.options) for c in cells}) == ['{"lr": 0.0001}', "{}"]
    assert {c.n_examples for c in cells} == {300}
    # paths in the file are relative to the file
    assert cells[0].checkpoint == str((tmp_path / "ck" / "r20.th").resolve())
    assert cells[0].data_dir == str((tmp_path / "data").resolve())


@pytest.mark.parametrize("text", ["continual@", "continual@often", "@0.1"])
def test_bad_shift_variants_are_refused_with_the_syntax(text) -> None:
    with pytest.raises(InputError, match="delta|shift"):
        parse_shift(text)


def test_grid_axes_are_not_run_settings(tmp_path) -> None:
    (tmp_path / "g.toml").write_text('[run]\nseed = 3\n')
    with pytest.raises(InputError, match="axes of the grid"):
        read_grid(tmp_path / "g.toml")


def test_content_id_ignores_machine_settings_but_not_results_settings() -> None:
    kw = dict(dataset="cifar10", fingerprint="f" * 16, checkpoint_sha256="ab", version="1")
    base = cell_id(RunConfig(method="tbn", seed=1, data_dir="/a", threads=1), **kw)
    assert base == cell_id(RunConfig(method="tbn", seed=1, data_dir="/b", threads=2, device="cpu"), **kw)
    assert base != cell_id(RunConfig(method="tbn", seed=2, data_dir="/a"), **kw)
    assert base != cell_id(RunConfig(method="tbn", seed=1, options={"momentum": 0.2}), **kw)
    assert base != cell_id(RunConfig(method="tbn", seed=1), **{**kw, "fingerprint": "e" * 16})
    assert base != cell_id(RunConfig(method="tbn", seed=1), **{**kw, "version": "2"})


def test_rerun_command_parses_back_to_the_same_configuration() -> None:
    cfg = RunConfig(method="tent", shift="continual", seed=3, delta=0.1, sort_labels=False, n_examples=50,
                    domains=["fog", "snow"], options={"lr": 0.001, "stats": "test"})
    cmd = rerun_command(cfg)
    assert cmd.startswith("tta run --method tent --shift continual")
    for part in ("--seed 3", "--delta 0.1", "--n-examples 50", "--domains fog,snow", "-O lr=0.001", "-O stats=test"):
        assert part in cmd


def test_two_processes_claiming_the_same_cells_each_get_a_disjoint_share(tmp_path) -> None:
    """Claims are atomic: racing writers split the cells between them, none twice, none lost."""
    db = tmp_path / "s.db"
    Store(db).close()
    # Each process stays alive until all have claimed: a claim of an exited process would
    # rightly be taken over as abandoned, which is not what this test is about.
    script = (
        "import sys; from tta.sweep.store import Store\n"
        "s = Store(sys.argv[1]); got = [i for i in range(200) if s.claim(f'c{i}', {}, '')]\n"
        "print(','.join(map(str, got)), flush=True)\n"
        "sys.stdin.read()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    shares = [set(map(int, filter(None, p.stdout.readline().strip().split(",")))) for p in procs]
    for p in procs:
        p.communicate("")
    assert all(p.returncode == 0 for p in procs)
    assert sum(map(len, shares)) == 200 and set.union(*shares) == set(range(200))


def test_a_claim_of_a_dead_process_is_taken_over_but_a_live_one_is_not(tmp_path) -> None:
    store = Store(tmp_path / "s.db")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = __import__("socket").gethostname()
    assert store.claim("a", {}, "", owner=f"{host}:{dead.pid}")
    assert store.claim("b", {}, "", owner=f"{host}:{os.getpid()}")
    assert store.claim("a", {}, "")  # its owner is gone
    assert not store.claim("b", {}, "", owner=f"{host}:999999999")  # its owner (this process) lives
    assert store.rows()[0]["attempts"] == 2


# -- real sweeps on the shared ResNet-20 and real CIFAR-10 images --------------------------------


def _args(small_cifar_c_dir: Path, resnet20_checkpoint: Path) -> list[str]:
    return ["--datasets", "cifar10", "--data-dir", str(small_cifar_c_dir), "--model", "resnet20",
            "--checkpoint", str(resnet20_checkpoint), "--domains", "noise_low,noise_high", "--n-examples", "40",
            "--batch-size", "20", "-q"]


def _sweep(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tta", "sweep", *args], capture_output=True, text=True, env=env,
                          timeout=600, **kw)


def _cells(db: Path) -> list[tuple]:
    return sqlite3.connect(db).execute("SELECT id, status, method, seed, mean_error, attempts FROM cells").fetchall()


def _any_done(db: Path) -> bool:
    """For polling a running sweep: its store file exists a moment before its table does."""
    try:
        return db.exists() and any(r[1] == "done" for r in _cells(db))
    except sqlite3.OperationalError:
        return False


@pytest.mark.realdata
def test_sweep_runs_each_cell_once_records_failures_and_resumes(small_cifar_c_dir, resnet20_checkpoint, tmp_path):
    db = tmp_path / "runs.db"
    base = _args(small_cifar_c_dir, resnet20_checkpoint)
    first = _sweep(["--store", str(db), "--methods", "source,tbn", "--shifts", "continual,iid", "--seeds", "1", *base])
    assert first.returncode == 0, first.stderr
    rows = _cells(db)
    assert len(rows) == 4 and {r[1] for r in rows} == {"done"}
    # a direct `tta run` of one cell gives the same error: the store holds the run's own numbers
    res = CliRunner().invoke(cli, ["run", "--method", "tbn", "--shift", "iid", "--seed", "1", "--dataset", "cifar10",
                                   *base[2:-1], "--output", str(tmp_path / "tbn.json"), "-q"])
    assert res.exit_code == 0, res.output
    direct = json.loads((tmp_path / "tbn.json").read_text())
    stored = [d for d in Store(db).documents() if d["method"]["name"] == "tbn" and d["stream"]["shift"] == "iid"]
    assert stored[0]["metrics"]["domain_errors"] == direct["metrics"]["domain_errors"]
    # importing that result file finds its cell already done (same content id)
    imp = CliRunner().invoke(cli, ["store", "import", str(db), str(tmp_path / "tbn.json")])
    assert "imported 0 of 1" in imp.output, imp.output
    # an unknown option is refused for the whole grid before any cell runs or is recorded
    bad = _sweep(["--store", str(db), "--methods", "source,tbn,tent", "--shifts", "continual,iid", "--seeds", "1",
                  "-O", "no_such_option=1", *base])
    assert bad.returncode == 2 and "no option 'no_such_option'" in bad.stderr and len(_cells(db)) == 4
    # rerun: nothing new; a cell failing when it runs (an option value out of range) is recorded with its error
    grid = tmp_path / "grid.toml"
    grid.write_text('methods = ["source", { name = "tbn", variants = [{ prior = -1 }] }]\n'
                    'shifts = ["continual", "iid"]\nseeds = [1]\n')
    again = _sweep([str(grid), "--store", str(db), *base])
    assert again.returncode == 1, again.stderr
    rows = _cells(db)
    failed = [r for r in rows if r[1] == "failed"]
    assert len(failed) == 2 and all(r[5] == 1 for r in failed)
    err = sqlite3.connect(db).execute("SELECT error FROM cells WHERE status = 'failed'").fetchone()[0]
    assert "prior" in err
    # without --retry-failed they stay failed and are not rerun, and the sweep still exits 1 (#32 row 5)
    third = _sweep([str(grid), "--store", str(db), *base])
    assert "failed before (use --retry-failed)" in third.stderr and third.returncode == 1, third.stderr
    assert all(r[5] == 1 for r in _cells(db) if r[1] == "failed")
    retried = _sweep([str(grid), "--store", str(db), "--retry-failed", *base])
    assert retried.returncode == 1
    assert all(r[5] == 2 for r in _cells(db) if r[1] == "failed")
    first_four = _sweep(["--store", str(db), "--methods", "source,tbn", "--shifts", "continual,iid", "--seeds", "1", *base])
    assert "nothing to run: every cell is done" in first_four.stderr


@pytest.mark.realdata
def test_an_exported_store_rebuilds_into_one_whose_sweep_has_nothing_left(small_cifar_c_dir, resnet20_checkpoint,
                                                                         tmp_path):
    """A board kept as result files survives the loss of its database: import gives back the same cells."""
    db, files, rebuilt = tmp_path / "runs.db", tmp_path / "cells", tmp_path / "rebuilt.db"
    args = ["--methods", "source,tbn", "--shifts", "continual,iid", "--seeds", "1",
            *_args(small_cifar_c_dir, resnet20_checkpoint)]
    assert _sweep(["--store", str(db), *args]).returncode == 0
    out = CliRunner().invoke(cli, ["store", "export", str(db), str(files)])
    assert out.exit_code == 0 and "4 new or changed" in out.output, out.output
    ids = {r[0] for r in _cells(db)}
    assert {p.stem for p in files.glob("*.json")} == ids
    before = {p.name: p.stat().st_mtime_ns for p in files.iterdir()}
    again = CliRunner().invoke(cli, ["store", "export", str(db), str(files)])
    assert "0 new or changed" in again.output and before == {p.name: p.stat().st_mtime_ns for p in files.iterdir()}
    imp = CliRunner().invoke(cli, ["store", "import", str(rebuilt), str(files)])
    assert "imported 4 of 4" in imp.output, imp.output
    assert {(r[0], r[1], r[4]) for r in _cells(rebuilt)} == {(r[0], r[1], r[4]) for r in _cells(db)}
    old = {d["_cell"]["id"]: d["metrics"] for d in Store(db).documents()}
    assert {d["_cell"]["id"]: d["metrics"] for d in Store(rebuilt).documents()} == old
    assert "nothing to run: every cell is done" in _sweep(["--store", str(rebuilt), *args]).stderr
    bad = CliRunner().invoke(cli, ["store", "export", str(files / f"{next(iter(ids))}.json"), str(tmp_path / "x")])
    assert bad.exit_code != 0 and "not a result store" in bad.output


@pytest.mark.realdata
def test_a_killed_sweep_resumes_and_every_cell_ends_done_once(small_cifar_c_dir, resnet20_checkpoint, tmp_path):
    db = tmp_path / "runs.db"
    args = ["--store", str(db), "--methods", "source,tbn,tbn-ema", "--shifts", "continual,iid", "--seeds", "1",
            *_args(small_cifar_c_dir, resnet20_checkpoint)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tta", "sweep", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not _any_done(db):
        time.sleep(0.5)
    workers = _children(proc.pid)
    assert workers or not sys.platform.startswith("linux")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, mid-sweep; its workers sit in sessions of their own
    proc.wait()
    # they stop too, after their current batch (the parent-death signal), instead of running on unrecorded
    assert not _alive_after(workers, 60)
    before = _cells(db)
    assert 1 <= sum(r[1] == "done" for r in before) < 6
    resumed = _sweep(args)
    assert resumed.returncode == 0, resumed.stderr
    rows = _cells(db)
    assert len(rows) == 6 and len({r[0] for r in rows}) == 6 and {r[1] for r in rows} == {"done"}
    # cells finished before the kill kept their result and were not run again
    done_before = {r[0]: r[4] for r in before if r[1] == "done"}
    assert all(r[5] == 1 and r[4] == done_before[r[0]] for r in rows if r[0] in done_before)
    assert f"done before {len(done_before)}" in resumed.stderr


_MIDDLE = """
import multiprocessing, os, sys, time
from pathlib import Path
from tta.sweep.backends import _init_worker

def child(path):
    _init_worker()
    Path(path).write_text(str(os.getpid()))
    time.sleep(600)

if __name__ == "__main__":
    proc = multiprocessing.get_context("spawn").Process(target=child, args=(sys.argv[1],))
    proc.start()
    proc.join()
"""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _alive_after(pids: list[int], seconds: float) -> list[int]:
    """The processes of ``pids`` still alive once they are all gone or ``seconds`` have passed."""
    deadline = time.time() + seconds
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are a Linux feature")
def test_a_sweep_worker_dies_with_the_sweep_that_spawned_it(tmp_path) -> None:
    # workers sit in their own sessions, so killing the sweep's process group does not reach them
    (tmp_path / "middle.py").write_text(_MIDDLE)
    ready = tmp_path / "worker.pid"
    middle = subprocess.Popen([sys.executable, str(tmp_path / "middle.py"), str(ready)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    deadline = time.time() + 120
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.2)
    worker = int(ready.read_text())
    assert _alive(worker) and os.getsid(worker) == worker != os.getsid(middle.pid)
    middle.kill()
    middle.wait()
    if _alive_after([worker], 20):
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived the sweep that spawned it")


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _sweep_with_a_running_cell(db: Path, small_cifar_c_dir: Path, resnet20_checkpoint: Path):
    """A one-cell CoTTA sweep started in the background, returned with its args and the worker running the cell."""
    args = ["--store", str(db), "--methods", "cotta", "--shifts", "continual", "--seeds", "1",
            *_args(small_cifar_c_dir, resnet20_checkpoint)]
    args[args.index("--n-examples") + 1] = "200"
    args[args.index("--batch-size") + 1] = "10"  # 40 CoTTA batches: a pass of seconds, so the signal lands inside it
    proc = subprocess.Popen([sys.executable, "-m", "tta", "sweep", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the worker installs its SIGTERM handler once the cell's batches start and keeps it for the whole pass; between
    # fork and exec a spawned worker still carries the sweep's own handler (and command line) for a few ms, and a
    # signal caught there killed it before its cell began, so the handler must hold for half a second
    deadline, worker, since = time.time() + 300, None, {}
    while worker is None and time.time() < deadline and proc.poll() is None:
        catching = {w for w in _children(proc.pid) if _alive(w) and _catches_sigterm(w)}
        since = {w: since.get(w, time.time()) for w in catching}
        worker = next((w for w, t in since.items() if time.time() - t >= 0.5), None)
        time.sleep(0.1)
    assert worker is not None, "the cell never started"
    return args, proc, worker


@pytest.mark.realdata
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads signal dispositions from /proc")
def test_a_cell_stopped_by_a_signal_is_released_with_its_progress_not_failed(small_cifar_c_dir, resnet20_checkpoint,
                                                                              tmp_path):
    db = tmp_path / "runs.db"
    args, proc, worker = _sweep_with_a_running_cell(db, small_cifar_c_dir, resnet20_checkpoint)
    os.kill(worker, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "stopped by a signal (rerun to resume) 1" in err, err
    # the claim is given back (no failed or running row), the progress kept for the rerun
    assert not _cells(db)
    (saved,) = (tmp_path / "runs.db.partial").glob("*.partial.pt")
    resumed = _sweep(args)
    assert resumed.returncode == 0, resumed.stderr
    ((cell, status, *_),) = _cells(db)
    assert status == "done" and saved.name == f"{cell}.partial.pt"


@pytest.mark.realdata
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads signal dispositions from /proc")
def test_sigterm_to_the_sweep_stops_it_like_ctrl_c(small_cifar_c_dir, resnet20_checkpoint, tmp_path):
    db = tmp_path / "runs.db"
    _, proc, worker = _sweep_with_a_running_cell(db, small_cifar_c_dir, resnet20_checkpoint)
    proc.terminate()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err
    assert not _cells(db)  # the claim was given back, not left running or failed
    assert list((tmp_path / "runs.db.partial").glob("*.partial.pt"))
    assert not _alive_after([worker], 30)


def test_the_local_backend_outlives_a_worker_that_died_abruptly() -> None:
    from tta.sweep.backends import LocalBackend

    backend = LocalBackend(1)
    try:
        dead = backend.pool.submit(os._exit, 9)  # as the OOM killer would
        ((_, outcome),) = backend.wait([dead])
        assert outcome["requeue"].startswith("a sweep worker died abruptly")  # for the sweep to run it again
        # the next cell runs on new workers (this one fails fast on its unknown method, as a result)
        ((_, outcome),) = backend.wait([backend.submit({"method": "no-such-method"}, None)])
        assert set(outcome) == {"error", "traceback"} and "BrokenProcessPool" not in outcome["error"]
    finally:
        backend.close(cancel=True)


def test_cancelling_the_local_backend_stops_running_cells_now() -> None:
    from tta.sweep.backends import LocalBackend

    backend = LocalBackend(1)
    worker_pid = backend.pool.submit(os.getpid).result(timeout=120)  # the worker is up
    running = backend.pool.submit(time.sleep, 600)
    deadline = time.time() + 120
    while not running.running() and time.time() < deadline:
        time.sleep(0.1)
    workers = list(backend.pool._processes.values())
    assert [w.pid for w in workers] == [worker_pid] and workers[0].is_alive()
    start = time.time()
    backend.close(cancel=True)
    assert time.time() - start < 15
    assert not any(w.is_alive() for w in workers)


@pytest.mark.realdata
def test_two_concurrent_sweeps_on_one_store_finish_the_grid_without_duplicates(small_cifar_c_dir, resnet20_checkpoint,
                                                                               tmp_path):
    db = tmp_path / "runs.db"
    args = ["--store", str(db), "--methods", "source,tbn,tbn-ema", "--shifts", "continual,iid", "--seeds", "1,2",
            *_args(small_cifar_c_dir, resnet20_checkpoint)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tta", "sweep", *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ran = [int(o.split("ran ")[-1].split(",")[0]) for o in outs]
    assert sum(ran) == 12  # every cell run by exactly one of the two
    rows = _cells(db)
    assert len(rows) == 12 and {r[1] for r in rows} == {"done"} and all(r[5] == 1 for r in rows)
    docs = Store(db).documents()
    assert len(docs) == 12
    assert len({(d["method"]["name"], d["stream"]["shift"], d["stream"]["seed"]) for d in docs}) == 12


def test_a_sweep_worker_shows_the_library_warnings_on_its_stderr() -> None:
    # a fresh process: before show_warnings the warning reaches only tta's NullHandler and vanishes
    code = ("import logging, tta; from tta.sweep.worker import show_warnings\n"
            "logging.getLogger('tta.pipeline.resume').warning('before')\n"
            "show_warnings()\n"
            "logging.getLogger('tta.pipeline.resume').warning('ignoring progress file x')\n"
            "logging.getLogger('tta.pipeline.resume').info('chatter')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert "WARNING tta.pipeline.resume (sweep worker): ignoring progress file x" in lines
    assert not any("before" in line or "chatter" in line for line in lines)
