"""Pool workers that die with the process that started them.

A killed ``tta corrupt`` (SIGTERM, SIGKILL, a closed terminal) must not leave
workers behind holding hundreds of MB each. On Linux the kernel kills a worker
when its parent exits (``PR_SET_PDEATHSIG``); everywhere, a daemon thread polls
the starting process and ends the worker once it is gone.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_S = 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (pid reused): treat as gone
        return False
    return True


def die_with(parent_pid: int) -> None:
    """Make this process exit when ``parent_pid`` does; call it first thing in a worker."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid and not _alive(parent_pid):  # it died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while _alive(parent_pid):
            time.sleep(POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="tta-parent-watch", daemon=True).start()
