"""Test streams: domains × shift protocol × label order × batch size × seed."""
from .dirichlet import class_sorted_order, dirichlet_order, mean_run_length
from .order import PROTOCOLS, Block, StreamOrder, build_order
from .shifts import SHIFTS, Shift, get_shift
from .stream import Batch, Stream, make_stream

__all__ = [
    "PROTOCOLS",
    "SHIFTS",
    "Batch",
    "Block",
    "Shift",
    "Stream",
    "StreamOrder",
    "build_order",
    "class_sorted_order",
    "dirichlet_order",
    "get_shift",
    "make_stream",
    "mean_run_length",
]
