"""A ``kill -9`` of a Ray sweep takes down the local cluster it started, and nothing else (#32, the orphan row).

Before the reaper, Ray's dashboard and runtime-env agents lived on under PID 1 for about a
minute after the sweep died (the GCS and raylet die with it through Ray's own fate sharing).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import random_cifar_c
from test_sweep import _alive, _alive_after, _children

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; the reaper is Linux-only")

REPO = Path(__file__).resolve().parents[1]

# A stand-in for the sweep: inside the block it starts a "raylet", which starts an "agent", which
# starts a child in a session of its own, and a "cell" (titled as Ray titles one) that saves on
# SIGTERM; after the block, an unrelated child of its own.
_STANDIN = textwrap.dedent("""
    import subprocess, sys, time
    from tta.sweep.ray_reaper import reaped_cluster
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    agent = f"import subprocess, time; subprocess.Popen({sleep!r}, start_new_session=True); time.sleep(120)"
    raylet = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {agent!r}]); time.sleep(120)"
    cell = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5), "
            "open(sys.argv[1], 'w').write('saved'), sys.exit(0))); time.sleep(120)")
    with reaped_cluster():
        head = subprocess.Popen([sys.executable, "-c", raylet])
        worker = subprocess.Popen(["ray::run_cell", "-c", cell, sys.argv[1]], executable=sys.executable)
    other = subprocess.Popen(sleep, start_new_session=True)
    print(head.pid, worker.pid, other.pid, flush=True)
    time.sleep(120)
""")


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def test_the_reaper_kills_every_marked_process_and_only_those_when_its_owner_dies(tmp_path):
    (tmp_path / "standin.py").write_text(_STANDIN)
    saved = tmp_path / "saved"
    owner = subprocess.Popen([sys.executable, str(tmp_path / "standin.py"), str(saved)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                             start_new_session=True)
    other = None
    try:
        head, worker, other = map(int, owner.stdout.readline().split())
        deadline = time.time() + 30
        while len(_tree(head)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        marked = [head, *_tree(head), worker]
        assert len(marked) == 4, marked
        time.sleep(0.5)  # the cell's handler is installed
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        assert not _alive_after(marked, 5), "marked processes outlived their sweep"
        assert _alive(other), "an unmarked process of the dead sweep was killed"
        assert saved.read_text() == "saved"  # the cell got SIGTERM, and time to save, before anything harsher
    finally:
        for pid in (owner.pid, other):
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        owner.wait()


def test_a_cluster_joined_at_an_address_is_not_marked(monkeypatch):
    from tta.sweep import backends, ray_reaper

    seen = []

    class FakeRay:  # records the environment ray.init would hand to the processes it starts
        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(**kwargs):
            seen.append((kwargs["address"], os.environ.get(ray_reaper.ENV)))

        @staticmethod
        def cluster_resources():
            return {"CPU": 1}

        @staticmethod
        def remote(**kwargs):
            return lambda f: f

    monkeypatch.setitem(sys.modules, "ray", FakeRay)
    monkeypatch.delenv(ray_reaper.ENV, raising=False)
    backends.RayBackend(address="10.0.0.1:6379")
    backends.RayBackend(address=None)
    (joined, joined_mark), (local, local_mark) = seen
    assert joined == "10.0.0.1:6379" and joined_mark is None
    assert local is None and local_mark and len(local_mark) == 32
    assert ray_reaper.ENV not in os.environ  # only the processes ray.init starts are marked


def _ray_sweep_args(tmp_path: Path) -> list[str]:
    root, ckpt = random_cifar_c(tmp_path / "data", 100)
    return ["--store", str(tmp_path / "runs.db"), "--methods", "cotta", "--shifts", "continual", "--seeds", "1",
            "--datasets", "cifar10", "--data-dir", str(root), "--model", "resnet20", "--checkpoint", str(ckpt),
            "--domains", "gaussian_noise", "--n-examples", "100", "-b", "4", "-q", "--backend", "ray", "--jobs", "1"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _maps_a_file_under(pid: int, folder: Path) -> bool:
    try:
        return str(folder) in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.slow
def test_sigkill_of_a_ray_sweep_leaves_no_process_of_its_cluster_and_saves_the_running_cell(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed; pip install 'tta-toolkit[ray]' (CI's test extra has it)")
    proc = subprocess.Popen([sys.executable, "-m", "tta", "sweep", *_ray_sweep_args(tmp_path)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            cells = [p for p in _tree(proc.pid) if _cmdline(p).startswith("ray::run_cell")]
            if cells and _maps_a_file_under(cells[0], tmp_path / "data"):
                break  # the cell memory-mapped its stream: loading is over, the batches begin
            time.sleep(0.2)
        else:
            pytest.fail(f"the Ray cell never reached its data: {proc.stderr.read() if proc.poll() is not None else ''}")
        time.sleep(1.5)  # into the batches (a fixed wait from the cell's start failed under load: still loading)
        cluster = _tree(proc.pid)
        names = {p: _cmdline(p)[:60] for p in cluster}
        assert any(n.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")) for n in names.values()), names
        os.kill(proc.pid, signal.SIGKILL)  # no handler, no atexit, no ray.shutdown
        proc.wait()
        left = _alive_after(cluster, 5)
        assert not left, f"still running 5 s after the sweep was killed: {[names[p] for p in left]}"
        # the running cell got SIGTERM before the rest went: it saved its progress after its batch
        saved = list((tmp_path / "runs.db.partial").glob("*.partial.pt"))
        assert len(saved) == 1 and saved[0].stat().st_size > 0, saved
    finally:
        if proc.poll() is None:
            proc.kill()
