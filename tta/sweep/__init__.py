"""``tta sweep``: many runs from a grid, into one result store, on local processes or Ray."""
from __future__ import annotations

from .backends import BACKENDS, LocalBackend, RayBackend, make_backend
from .cells import Cell, cell_id, rerun_command
from .grid import Grid, override, parse_shift, read_grid
from .dispatch import Event, SweepSummary, plan, sweep

__all__ = ["BACKENDS", "Cell", "Event", "Grid", "LocalBackend", "RayBackend", "SweepSummary", "cell_id", "make_backend",
           "override", "parse_shift", "plan", "read_grid", "rerun_command", "sweep"]
