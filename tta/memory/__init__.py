"""Sample memories of test-time adaptation methods (RoTTA's CSTU, NOTE's PBRS).

Each memory holds its contents as tensors, so ``get_state()``/``set_state()`` round-trip it
through a ``state_dict``-style dict and ``reset()`` empties it. Inserting is a short
per-sample step (each decision depends on the previous one); reading is one gather.
"""
from .cstu import CSTU
from .pbrs import PBRS

__all__ = ["CSTU", "PBRS"]
