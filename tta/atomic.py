"""Atomic file writes: a temporary file beside the target, then ``os.replace``.

A crash or Ctrl-C leaves either the old file or the new one, never half of one.
Every writer of results, checkpoints and generated data goes through here.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import WriteError

#: errors that mean "this folder cannot be written", reported as one clear line
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR)


def _umask() -> int:
    """The process umask: from /proc on Linux (thread-safe), else by setting it and back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:  # mkstemp makes the file 0600; a result must get the mode any new file gets (0666 less the umask)
        os.fchmod(fd, 0o666 & ~_umask())
    except (OSError, AttributeError):  # no fchmod (Windows) or a filesystem without modes
        pass
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsynced before the rename).

    A folder that cannot be written (read-only, full, name too long) raises ``WriteError`` naming it and why.
    """
    path = Path(path).expanduser()
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        raise WriteError(write_problem(path, exc)) from None
    return path


def write_problem(path: str | Path, exc: OSError) -> str:
    """One line saying why ``path`` could not be written and what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write {path}: no space left on its device ({exc.strerror}); free space or choose another folder"
    if exc.errno == errno.ENAMETOOLONG:
        name = Path(path).name
        return (f"cannot write {path}: the name is too long for the file system ({len(os.fsencode(name))} bytes, "
                f"{name_max(Path(path).parent)} allowed with the files tta keeps beside it); pass a shorter name")
    if exc.errno in _UNWRITABLE:
        return f"cannot write {path} ({exc.strerror or exc}); choose a writable folder"
    return f"cannot write {path} ({exc.strerror or exc}); check the folder and the disk, or choose another folder"


#: the longest suffix tta adds to an output's name (``<name>.partial.pt``, ``.<name>.<random>.tmp``)
LONGEST_SUFFIX = len(".partial.pt") + len("..XXXXXXXX.tmp")


def name_max(folder: str | Path) -> int:
    """Bytes a file name may take in ``folder``, less what tta appends for its own files beside it."""
    try:
        limit = os.pathconf(folder if os.path.isdir(folder) else ".", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    return max(int(limit) - LONGEST_SUFFIX, 1)


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars Python numbers, paths strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (ValueError, TypeError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``obj`` (made JSON-safe by ``json_safe``) as JSON to ``path`` atomically."""
    text = json.dumps(json_safe(obj), indent=indent, sort_keys=sort_keys) + "\n"
    return write_bytes(path, text.encode())


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode())


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch  # noqa: PLC0415  (keep this module importable without torch)

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
    return Path(path)
