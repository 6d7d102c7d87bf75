"""File names that come from data (a store's cell ids, a result's fields), kept inside their folder.

A store or result file is not trusted (docs/threat-model.md): a cell id ``../../x`` or
``/abs/x`` must not make ``tta store export`` write outside the folder it was given. Every
path built from such a value goes through :func:`child`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import InputError

#: what a file name built from data may hold: no separators, no leading dot, no control characters
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=-]{0,199}$")


def child(folder: str | Path, name: str, *, what: str, fix: str) -> Path:
    """``folder / name`` when ``name`` is one plain file name that resolves inside ``folder``; else ``InputError``.

    Refuses separators, ``..``, absolute names, NUL and other odd characters, and a name whose
    existing file is a symbolic link out of the folder.
    """
    if not isinstance(name, str) or not _SAFE.match(name) or name in (".", ".."):
        raise InputError(f"{what} {name!r} is not a plain file name (it could write outside {folder}); {fix}")
    base = Path(folder).resolve()
    path = base / name
    target = Path(os.path.realpath(path))
    if target.parent != base:
        raise InputError(f"{what} {name!r} leads outside {folder} (to {target}); {fix}")
    return path
