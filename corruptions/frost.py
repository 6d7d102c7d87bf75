"""Frost textures: where to find them, and how the original scales them."""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from tta.errors import DataError

from .resample import cv2_linear_resize

log = logging.getLogger(__name__)

# The original picks np.random.randint(5): frost6.jpg is never used.
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
ENV_VAR = "TTA_FROST_DIR"
_WHEELS = ("imagecorruptions", "imagecorruptions-imaug")
_HOWTO = (
    f"pass frost_dir=... (CLI: --frost-dir), set ${ENV_VAR} to a folder holding {', '.join(FROST_FILES)}, "
    "or `pip install --no-deps imagecorruptions` (its wheel ships them; they are read without importing it)"
)


def _from_wheel() -> Path | None:
    """The frost folder inside an installed imagecorruptions wheel, found without importing it."""
    for dist_name in _WHEELS:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            continue
        for f in dist.files or ():
            if f.name == FROST_FILES[0] and f.parent.name == "frost":
                folder = Path(dist.locate_file(f)).parent
                if folder.is_dir():
                    return folder
    return None


def find_frost_dir(frost_dir: str | os.PathLike | None = None) -> Path:
    """The texture folder: the argument, then ``$TTA_FROST_DIR``, then an installed wheel."""
    if frost_dir is not None:
        folder, origin = Path(frost_dir).expanduser(), "frost_dir"
    elif os.environ.get(ENV_VAR):
        folder, origin = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    else:
        found = _from_wheel()
        if found is None:
            raise DataError(f"frost textures not found (no frost_dir, no ${ENV_VAR}, no imagecorruptions wheel); {_HOWTO}")
        folder, origin = found, "the imagecorruptions wheel"
    if not folder.is_dir():
        raise DataError(f"frost texture folder {folder} (from {origin}) does not exist; {_HOWTO}")
    missing = [f for f in FROST_FILES if not (folder / f).is_file()]
    if missing:
        raise DataError(f"frost texture folder {folder} (from {origin}) lacks {', '.join(missing)}; {_HOWTO}")
    return folder


@lru_cache(maxsize=8)
def load_textures(folder: str, scale: float) -> tuple[np.ndarray, ...]:
    """frost1..frost5 as RGB uint8, alpha dropped (as ``cv2.imread``), resized by ``scale``."""
    out = []
    for name in FROST_FILES:
        with Image.open(Path(folder) / name) as im:
            rgb = np.asarray(im.convert("RGB"))
        if scale != 1.0:
            rgb = cv2_linear_resize(rgb, scale)
        out.append(rgb)
    log.debug("loaded frost textures from %s at scale %s", folder, scale)
    return tuple(out)
