"""Take down the local Ray cluster a sweep started when the sweep process dies, however it dies.

Ray ties its head processes (GCS, raylet) to the driver with ``PR_SET_PDEATHSIG``, but not the
raylet's own children: after a ``kill -9`` of ``tta sweep --backend ray`` the dashboard and
runtime-env agents noticed the dead raylet at once yet lived on under PID 1 for about a minute
(Ray 2.60), and the running cell died with its raylet a few seconds later without saving.

So before it starts a cluster, the sweep starts this reaper and marks the cluster's processes:
a random token in an environment variable, set while ``ray.init`` spawns the head, which every
process Ray starts from there (raylet, agents, workers, their children) inherits. The reaper
waits on a pipe whose only writer is the sweep; the kernel closes it when the sweep process
ends (all of it, unlike ``PR_SET_PDEATHSIG``, which fires when the spawning *thread* ends), and
the reaper then kills every process that carries the token until none is left, and exits: a
worker running a cell gets SIGTERM first, to save its progress after its batch (``tta.resume``)
as a local worker does, the rest SIGKILL.

A process carries the token only if this sweep's cluster started it, so a cluster joined at an
address, other users' processes and other sweeps' clusters are never touched; nothing is
signalled by name alone. The pipe's write end is not inherited across ``exec``; a child forked
without exec would hold it and delay the reaper until that child ends too (the sweep forks none).

This file is also the reaper's program (``python -I ray_reaper.py FD``, the token first on the
pipe): standard library only, so it starts in milliseconds and needs neither torch nor Ray.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

#: the environment variable that marks the processes of a cluster started by a sweep
ENV = "TTA_RAY_SESSION"

#: how long the reaper keeps looking for marked processes after the first scan that finds none
#: (a process forked while it kills), and at most in all
_SETTLE_S = 0.3
_GIVE_UP_S = 30.0
#: a Ray worker running a cell (Ray titles a worker by its task's function: ``tta.sweep.worker.run_cell``)
CELL_TITLE = b"ray::run_cell"
#: how long a running cell may take to finish its batch and save its progress before it is killed;
#: Ray's worker exits by itself about 3 s after its raylet died, which bounds what a longer wait could win
CELL_GRACE_S = 3.0

#: the reapers started by this process, with the write ends of their pipes
_reapers: list[tuple[subprocess.Popen, int]] = []


def marked(token: str, proc: Path = Path("/proc")) -> list[int]:
    """PIDs of the live processes whose environment has ``ENV=token`` (other users' processes are not readable)."""
    entry = f"{ENV}={token}".encode()
    out = []
    for environ in proc.glob("[0-9]*/environ"):
        try:
            if entry in environ.read_bytes().split(b"\0"):
                out.append(int(environ.parent.name))
        except (OSError, ValueError):  # gone, or another user's (a zombie's environ reads empty)
            continue
    return out


def reap(token: str, cell_grace_s: float = CELL_GRACE_S) -> None:
    """Kill every process marked with ``token`` (but this one) until none is left for a moment.

    A worker running a cell (``ray::run_cell``) gets SIGTERM first, to stop after its batch
    and save its progress, and SIGKILL only if it is still there ``cell_grace_s`` later; the
    rest get SIGKILL at once.
    """
    me, start, quiet_since, warned = os.getpid(), time.monotonic(), None, set()
    while time.monotonic() - start < _GIVE_UP_S:
        found = [pid for pid in marked(token) if pid != me]
        patient = time.monotonic() - start < cell_grace_s
        for pid in found:
            cell = patient and _is_cell(pid)
            if cell and pid in warned:
                continue
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM if cell else signal.SIGKILL)
            if cell:
                warned.add(pid)
        now = time.monotonic()
        if found:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= _SETTLE_S:
            return
        time.sleep(0.05)


def _is_cell(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(CELL_TITLE)
    except OSError:
        return False


@contextlib.contextmanager
def reaped_cluster() -> Iterator[str]:
    """Mark the processes started inside this block and start a reaper that kills them when this process ends.

    Use it around the ``ray.init`` that starts a local cluster; yields the token. Linux only
    (it reads ``/proc``); elsewhere it does nothing. The mark is taken off this process's
    environment again on the way out, so later subprocesses of the caller are not marked.
    """
    if not sys.platform.startswith("linux"):
        yield ""
        return
    token = secrets.token_hex(16)
    read_end, write_end = os.pipe()  # not inheritable: Ray's and multiprocessing's children do not hold it
    try:
        reaper = subprocess.Popen([sys.executable, "-I", __file__, str(read_end)], pass_fds=(read_end,),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)  # out of reach of Ctrl-C and hang-ups aimed at the sweep
    except OSError:
        os.close(write_end)
        os.close(read_end)
        yield ""
        return
    os.close(read_end)
    os.write(write_end, token.encode() + b"\n")  # not on the command line, where other users could read it
    # kept open (and deliberately never closed) for the life of this process: its end is the signal
    _reapers.append((reaper, write_end))
    # SPT_NOENV: Ray titles its Python processes ("ray::DashboardAgent") with setproctitle, which
    # by default writes over the memory /proc/PID/environ shows, mark included, unless told not to
    # (titles are then limited to the length of the command line, which Ray's long ones exceed)
    before = {name: os.environ.get(name) for name in (ENV, "SPT_NOENV")}
    os.environ[ENV] = token
    os.environ["SPT_NOENV"] = before["SPT_NOENV"] or "1"
    try:
        yield token
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _main(argv: list[str]) -> None:
    fd = int(argv[0])
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    got = b""
    while True:  # the token, then EOF once the sweep process is gone (nobody writes to the pipe any more)
        try:
            chunk = os.read(fd, 64)
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    token = got.split(b"\n", 1)[0].decode("ascii", "replace")
    if len(token) == 32:  # a sweep that died before it wrote the token marked nothing
        reap(token)


if __name__ == "__main__":
    _main(sys.argv[1:])
