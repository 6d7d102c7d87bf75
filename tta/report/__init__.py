"""The leaderboard as a static HTML site with hand-written SVG charts (``tta report``)."""
from __future__ import annotations

from .published import load_published, matching
from .site import write_site

__all__ = ["load_published", "matching", "write_site"]
