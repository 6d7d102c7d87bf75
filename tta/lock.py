"""An exclusive lock on a run's output, so two runs never write the same result.

``fcntl.flock`` on ``<output>.lock``: the kernel drops it when the process dies,
so a killed run never leaves a stale lock behind. The lock covers the result and
its ``.partial.pt`` progress file.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import InputError


def lock_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".lock")


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``output`` or raise ``InputError`` at once if another run holds it."""
    try:
        import fcntl  # noqa: PLC0415  (POSIX only)
    except ImportError:  # Windows: no advisory locks; run unguarded
        yield Path(output)
        return
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"another tta run is writing {output} (it holds {path}); wait for it to finish or pass another --output"
            ) from None
        # the holder before us may have removed the file after we opened it: lock the file that is there now
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield Path(output)
    finally:
        path.unlink(missing_ok=True)  # still held, so nobody can be waiting on this inode's lock
        os.close(fd)
