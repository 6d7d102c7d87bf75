"""Sample memories of test-time adaptation methods (RoTTA's CSTU, NOTE's PBRS).

Samples live in one tensor on their device; ``get_state()``/``set_state()`` round-trip all
contents as a dict of tensors and ``reset()`` empties the memory. Inserting is a short
per-sample step on Python bookkeeping (each decision depends on the previous one, so it
cannot be batched); reading the memory back is one gather.
"""
from .cstu import CSTU
from .pbrs import PBRS

__all__ = ["CSTU", "PBRS"]
