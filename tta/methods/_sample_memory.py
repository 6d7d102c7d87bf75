"""Sample memories of test-time adaptation methods: RoTTA's CSTU and NOTE's PBRS, on one slot store.

``memory`` in tta means these stores of test samples only (a method's other carried state is its
step state, ``_step_output``).

Storage (``SlotMemory``). Fixed-capacity sample storage with per-class lists, shared by the class-aware memories.

The official memories keep one Python list per class and append new items at the end, so
"list order" is (class, insertion order). Here the samples live in one (capacity, ...)
tensor on the samples' device, and the bookkeeping (which slot holds which class, in
which order) is small Python lists, so that a per-sample insert costs microseconds and
never synchronizes with an accelerator. ``get_state()`` exports everything as tensors;
``set_state()`` rebuilds the lists from them.

Adapter part (``MemoryModule``). A sample memory as an ``nn.Module`` part of an adapter: its contents are the adapter's state.

The memories (``CSTU``, ``PBRS``) keep Python bookkeeping next to one sample tensor, so
they travel as extra state: ``get_extra_state()`` is their ``get_state()`` (a dict of
tensors, loadable with ``weights_only=True``). ``seen`` counts the samples offered since
the last reset; RoTTA and NOTE update every ``update_frequency`` of them, mid-batch if
need be. ``reset()`` of the adapter restores the empty memory and ``seen = 0``.

PBRS (``PBRS``). NOTE's prediction-balanced reservoir sampling (PBRS) memory.

Gong et al., "NOTE: Robust Continual Test-time Adaptation Against Temporal Correlation",
NeurIPS 2022; official code TaesikGong/NOTE ``utils/memory.py`` (the copy in
devavratTomar/unmixtns ``methods/note.py`` is the same). Adding (x, y):

* ``seen[y] += 1``;
* if the memory is full, let L be the classes of largest occupancy (ties all kept):
  - y not in L: pick a class c of L uniformly, evict a uniformly chosen item of c, accept;
  - y in L: draw u ~ U(0, 1); if u <= |M_y| / seen[y] evict a uniformly chosen item of y
    and accept, otherwise reject;
* an accepted item is appended to class y's list.

The official code draws from Python's ``random`` (``choice``, ``randrange``, ``uniform``).
Here every draw comes from the passed CPU ``torch.Generator``, in the same order:
``choice(L)`` and ``randrange(n)`` are ``torch.randint(n)``, ``uniform(0, 1)`` is a float64
``torch.rand``.

CSTU (``CSTU``). RoTTA's category-balanced sampling with timeliness and uncertainty (CSTU) memory.

Yuan, Xie, Li, CVPR 2023; official code BIT-DA/RoTTA ``core/utils/memory.py``. Each item
holds a sample, its pseudo-label, its uncertainty u (prediction entropy) and its age
(samples offered since it entered). Its heuristic score, higher = evicted first, is::

    score(age, u) = lambda_t / (1 + exp(-age / N)) + lambda_u * u / ln(C)

With N = capacity and per-class quota N / C (a float), adding (x, y, u) does:

* class y below quota: accept if the memory is not full, else evict from the majority
  classes (all classes with the largest occupancy);
* class y at quota: evict from class y;
* eviction scans the candidate classes in ascending order and each class in insertion
  order, keeps the maximal score with ties going to the *last* item scanned, and pops it
  only if its score exceeds the new item's score(0, u); otherwise the new item is
  rejected. No candidate at all means accept;
* afterwards every stored item ages by one (a just-added item has age 1).

Ages are kept as the add count at entry (age = adds since then, which is what the
official per-add increment counts), and scores are Python floats computed with the
official expression, so ties and comparisons are bit-identical to the official code.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import InputError


class SlotMemory:
    """Samples in ``capacity`` slots plus, per class, the list of its slots in insertion order."""

    def __init__(self, capacity: int, num_classes: int) -> None:
        if capacity < 1:
            raise InputError(f"memory capacity must be at least 1, got {capacity}")
        if num_classes < 1:
            raise InputError(f"memory needs at least one class, got {num_classes}")
        self.capacity = int(capacity)
        self.num_classes = int(num_classes)
        self.reset()

    def reset(self) -> None:
        """Empty the memory (the sample buffer is reallocated on the next insert)."""
        self.data: torch.Tensor | None = None
        self._lists: list[list[int]] = [[] for _ in range(self.num_classes)]
        self._counts: list[int] = [0] * self.num_classes
        self._free: list[int] = list(range(self.capacity - 1, -1, -1))  # pop() gives the lowest slot
        self._stamp: list[int] = [0] * self.capacity
        self._clock = 0

    # -- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.capacity - len(self._free)

    def counts(self) -> list[int]:
        """Number of stored items per class (a copy)."""
        return list(self._counts)

    def class_counts(self) -> torch.Tensor:
        """(num_classes,) number of stored items per class."""
        return torch.tensor(self.counts(), dtype=torch.long)

    def ordered_slots(self) -> list[int]:
        """Slots of the stored items in the official list order: by class, then insertion."""
        return [s for lst in self._lists if lst for s in lst]

    def samples(self) -> torch.Tensor:
        """Stored samples (M, ...) in list order; an empty tensor when nothing is stored."""
        slots = self.ordered_slots()
        if self.data is None or not slots:
            return torch.empty(0)
        return self.data[torch.tensor(slots, device=self.data.device)]

    def labels(self) -> torch.Tensor:
        """Stored (pseudo-)labels in list order."""
        return torch.tensor([c for c, lst in enumerate(self._lists) for _ in lst], dtype=torch.long)

    # -- writing -------------------------------------------------------------------------
    def _put(self, x: torch.Tensor, c: int) -> int:
        if self.data is None:
            self.data = x.new_zeros((self.capacity,) + tuple(x.shape))
        elif self.data.shape[1:] != x.shape:
            raise InputError(
                f"memory holds samples of shape {tuple(self.data.shape[1:])}, got {tuple(x.shape)}; "
                "reset() the memory before changing the input size"
            )
        slot = self._free.pop()
        self.data[slot] = x.detach()
        self._lists[c].append(slot)
        self._counts[c] += 1
        self._stamp[slot] = self._clock
        self._clock += 1
        return slot

    def _pop(self, c: int, index: int) -> int:
        """Remove item ``index`` of class ``c``'s list; return its slot."""
        slot = self._lists[c].pop(index)
        self._counts[c] -= 1
        self._free.append(slot)
        return slot

    def _check_class(self, c: int) -> int:
        c = int(c)
        if not 0 <= c < self.num_classes:
            raise InputError(f"class {c} outside 0..{self.num_classes - 1}; give the memory the model's class count")
        return c

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, torch.Tensor]:
        """All contents as tensors: ``cls`` (-1 = free) and ``stamp`` per slot, ``clock``, and ``data``."""
        cls = [-1] * self.capacity
        for c, lst in enumerate(self._lists):
            for s in lst:
                cls[s] = c
        state = {
            "cls": torch.tensor(cls, dtype=torch.long),
            "stamp": torch.tensor(self._stamp, dtype=torch.long),
            "clock": torch.tensor(self._clock, dtype=torch.long),
        }
        if self.data is not None:
            state["data"] = self.data.clone()
        return state

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`get_state` returned."""
        missing = [k for k in ("cls", "stamp", "clock") if k not in state]
        if missing:
            raise InputError(f"memory state lacks {missing}; pass a dict returned by get_state()")
        if state["cls"].shape != (self.capacity,):
            raise InputError(f"memory state is for capacity {state['cls'].numel()}, this memory has {self.capacity}")
        cls, stamp = state["cls"].tolist(), state["stamp"].tolist()
        if max(cls) >= self.num_classes:
            raise InputError(f"memory state has class {max(cls)}, this memory has {self.num_classes} classes")
        self._stamp = stamp
        self._clock = int(state["clock"])
        self._lists = [[] for _ in range(self.num_classes)]
        for s in sorted(range(self.capacity), key=lambda s: stamp[s]):
            if cls[s] >= 0:
                self._lists[cls[s]].append(s)
        self._counts = [len(lst) for lst in self._lists]
        self._free = [s for s in range(self.capacity - 1, -1, -1) if cls[s] < 0]
        self.data = state["data"].clone() if "data" in state else None


class MemoryModule(nn.Module):
    """Wraps ``bank`` (a ``SlotMemory``) with a ``seen`` counter; both are state."""

    def __init__(self, bank: SlotMemory) -> None:
        super().__init__()
        self.bank = bank
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return len(self.bank)

    def offer(self, x: torch.Tensor, labels: list[int], extra: Sequence[Any], update_frequency: int,
              update: Callable[[], Any]) -> int:
        """Add the samples of ``x`` one by one (``bank.add(x[i], labels[i], extra[i])``), counting each in
        ``seen``, and call ``update()`` after every ``update_frequency``-th sample, mid-batch if need be
        (RoTTA's and NOTE's official loop). Returns how many updates ran."""
        seen, updates = int(self.seen), 0
        for i in range(x.shape[0]):
            self.bank.add(x[i], labels[i], extra[i])
            seen += 1
            if seen % update_frequency == 0:
                update()
                updates += 1
        self.seen.fill_(seen)
        return updates

    def get_extra_state(self) -> dict[str, Any]:
        return self.bank.get_state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.bank.set_state({k: v.cpu() if k != "data" else v for k, v in state.items()})

    def _apply(self, fn, recurse: bool = True):  # move the stored samples with the module
        out = super()._apply(fn, recurse)
        if self.bank.data is not None:
            self.bank.data = fn(self.bank.data)
        return out

    def extra_repr(self) -> str:
        return f"{type(self.bank).__name__}(capacity={self.bank.capacity}, num_classes={self.bank.num_classes})"


class PBRS(SlotMemory):
    """Prediction-balanced reservoir of NOTE (see module doc); capacity 64 is the official size."""

    def __init__(self, capacity: int = 64, num_classes: int = 10) -> None:
        super().__init__(capacity, num_classes)

    def reset(self) -> None:
        super().reset()
        self._seen = [0] * self.num_classes

    @property
    def seen(self) -> torch.Tensor:
        """(num_classes,) samples offered per pseudo-label since the last reset."""
        return torch.tensor(self._seen, dtype=torch.long)

    def add(self, x: torch.Tensor, label: int, generator: torch.Generator | None = None) -> bool:
        """Offer one sample with its pseudo-label; return whether it was stored."""
        label = self._check_class(label)
        self._seen[label] += 1
        if len(self) >= self.capacity:
            counts = self._counts
            top = max(counts)
            largest = [c for c, n in enumerate(counts) if n == top]
            if label not in largest:
                c = largest[_randbelow(len(largest), generator)]
                self._pop(c, _randbelow(counts[c], generator))
            else:
                u = float(torch.rand((), dtype=torch.float64, generator=generator))
                if u <= counts[label] / self._seen[label]:
                    self._pop(label, _randbelow(counts[label], generator))
                else:
                    return False
        self._put(x, label)
        return True

    def get_memory(self) -> torch.Tensor:
        """Stored samples (M, ...) in list order (by class, then insertion)."""
        return self.samples()

    def get_state(self) -> dict[str, torch.Tensor]:
        state = super().get_state()
        state["seen"] = self.seen
        return state

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        if "seen" not in state:
            raise InputError("PBRS state lacks 'seen'; pass a dict returned by PBRS.get_state()")
        super().set_state(state)
        self._seen = state["seen"].tolist()


def _randbelow(n: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def timeliness_weight(ages: torch.Tensor) -> torch.Tensor:
    """RoTTA's per-item loss weight exp(-a) / (1 + exp(-a)) for normalized ages a = age / N."""
    return torch.exp(-ages) / (1 + torch.exp(-ages))


class CSTU(SlotMemory):
    """Category-balanced memory of RoTTA (see module doc). Defaults are the official ones."""

    def __init__(self, capacity: int = 64, num_classes: int = 10, lambda_t: float = 1.0, lambda_u: float = 1.0) -> None:
        if num_classes < 2:
            raise InputError(f"CSTU divides the uncertainty by ln(num_classes); it needs 2+ classes, got {num_classes}")
        self.lambda_t = float(lambda_t)
        self.lambda_u = float(lambda_u)
        super().__init__(capacity, num_classes)
        self.per_class = self.capacity / self.num_classes
        self._log_c = math.log(self.num_classes)

    def reset(self) -> None:
        super().reset()
        self._uncertainty: list[float] = [0.0] * self.capacity
        self._birth: list[int] = [0] * self.capacity
        self._adds = 0

    def score(self, age: int, uncertainty: float) -> float:
        """Heuristic score, the official expression term by term."""
        return self.lambda_t * 1 / (1 + math.exp(-age / self.capacity)) + self.lambda_u * uncertainty / self._log_c

    def add(self, x: torch.Tensor, label: int, uncertainty: float) -> bool:
        """Offer one sample with its pseudo-label and uncertainty; return whether it was stored."""
        label = self._check_class(label)
        uncertainty = float(uncertainty)
        new_score = self.score(0, uncertainty)
        counts = self._counts
        if counts[label] < self.per_class:
            if len(self) < self.capacity:
                accept = True
            else:
                top = max(counts)
                accept = self._remove_from([c for c, n in enumerate(counts) if n == top], new_score)
        else:
            accept = self._remove_from([label], new_score)
        if accept:
            slot = self._put(x, label)
            self._uncertainty[slot] = uncertainty
            self._birth[slot] = self._adds
        self._adds += 1  # every stored item ages by one
        return accept

    def _remove_from(self, classes: list[int], new_score: float) -> bool:
        best = best_class = best_index = None
        for c in classes:
            for i, slot in enumerate(self._lists[c]):
                s = self.score(self._adds - self._birth[slot], self._uncertainty[slot])
                if best is None or s >= best:  # ties go to the last item scanned
                    best, best_class, best_index = s, c, i
        if best_class is None:
            return True
        if best > new_score:
            self._pop(best_class, best_index)
            return True
        return False

    def items(self) -> list[tuple[int, float, int]]:
        """(label, uncertainty, age) of the stored items in list order."""
        return [
            (c, self._uncertainty[s], self._adds - self._birth[s]) for c, lst in enumerate(self._lists) for s in lst
        ]

    def get_memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples (M, ...) in list order and their normalized ages age / N as float32 (M,)."""
        ages = torch.tensor([age / self.capacity for _, _, age in self.items()], dtype=torch.float64).float()
        return self.samples(), ages

    def get_state(self) -> dict[str, torch.Tensor]:
        state = super().get_state()
        state["uncertainty"] = torch.tensor(self._uncertainty, dtype=torch.float64)
        state["birth"] = torch.tensor(self._birth, dtype=torch.long)
        state["adds"] = torch.tensor(self._adds, dtype=torch.long)
        return state

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        missing = [k for k in ("uncertainty", "birth", "adds") if k not in state]
        if missing:
            raise InputError(f"CSTU state lacks {missing}; pass a dict returned by CSTU.get_state()")
        super().set_state(state)
        self._uncertainty = state["uncertainty"].tolist()
        self._birth = state["birth"].tolist()
        self._adds = int(state["adds"])
