"""Default folders: datasets (``$TTA_DATA``) and tta's own cache (``$TTA_CACHE``)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$TTA_CACHE``, else ``$XDG_CACHE_HOME/tta``, else ``~/.cache/tta``."""
    env = os.environ.get("TTA_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tta"


def default_data_dir() -> Path:
    """Where datasets live unless ``--data-dir`` says otherwise: ``$TTA_DATA`` or ``<cache>/data``."""
    env = os.environ.get("TTA_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"
