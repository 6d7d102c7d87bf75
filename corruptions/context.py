"""What a corruption function gets besides the images and its parameters."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .presets import Preset


@dataclass(frozen=True)
class Context:
    preset: Preset
    frost_dir: Path | str | None = None
