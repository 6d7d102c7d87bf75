"""``Stream``: domains × order × batch size -> batches of (x, y, domain id, sample index)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from ..errors import InputError
from .order import StreamOrder, build_order
from .shifts import get_shift


class Batch(NamedTuple):
    """One batch of a stream. ``reset`` is True when the adapter must reset before it."""

    x: torch.Tensor  # float (B, C, H, W) in [0, 1]
    y: torch.Tensor  # int64 labels
    domain: torch.Tensor  # int64 domain id per sample
    index: torch.Tensor  # int64 sample index within its domain
    block: int
    reset: bool


class Stream:
    """A fixed, replayable sequence of batches.

    Batches never cross block boundaries (the last batch of a block may be
    smaller), as when each domain has its own ``DataLoader(drop_last=False)``.
    Images are read per batch; nothing is converted to float ahead of time.
    """

    def __init__(
        self,
        domains: Sequence[Any],
        order: StreamOrder,
        batch_size: int,
        *,
        reset_each_block: bool = False,
        num_workers: int | None = None,
    ) -> None:
        self.domains = list(domains)
        self.order = order
        self.batch_size = int(batch_size)
        self.reset_each_block = reset_each_block
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}; pass --batch-size 1 or more")
        order.validate([len(d) for d in self.domains])
        shortest = min(range(len(order.blocks)), key=lambda b: len(order.blocks[b]))
        if self.batch_size > len(order.blocks[shortest]):
            raise InputError(
                f"batch size {self.batch_size} is larger than the stream: block {shortest} has only "
                f"{len(order.blocks[shortest])} samples; pass --batch-size {len(order.blocks[shortest])} or less, "
                "or more --n-examples"
            )
        self.plan = [
            (b, start, min(start + self.batch_size, len(block)))
            for b, block in enumerate(order.blocks)
            for start in range(0, len(block), self.batch_size)
        ]
        self.num_workers = num_workers if num_workers is not None else max(getattr(d, "preferred_workers", 0) for d in self.domains)
        self._y = [torch.from_numpy(np.asarray(d.labels, dtype=np.int64)) for d in self.domains]

    def __len__(self) -> int:
        return len(self.plan)

    @property
    def num_samples(self) -> int:
        return len(self.order)

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of everything that fixes the numbers a method sees.

        The order's own fingerprint (which samples, in which order, in which blocks), the
        batch size, whether the model resets between blocks (``iid`` and ``continual`` can
        share an order), and the content of the data (:meth:`data_digest`). Two runs with
        the same fingerprint, method and model give the same result.
        """
        parts = [self.order.fingerprint(), self.batch_size, bool(self.reset_each_block), self.data_digest()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def data_digest(self) -> str:
        """sha256 (first 16 hex digits) of the content of the stream's domains.

        Per domain: its name, severity and size, how it was generated (corruption seed and
        preset, when generated), the sha256 of its labels, and the digest of its image file
        (:meth:`tta.data.domain.Domain.identity`: the file's size and 16 sampled 64 KiB chunks,
        about 1 MB read per file). Paths and modification times are left out, so the same
        data in another folder has the same digest and different data in one folder does not.
        """
        if getattr(self, "_data_digest", None) is None:  # files are read once per stream
            h = hashlib.sha256()
            for dom in self.domains:
                desc = {k: v for k, v in dom.describe().items() if k != "source"}
                ident = dom.identity() if hasattr(dom, "identity") else (getattr(dom, "key", dom.name), None)
                labels = hashlib.sha256(np.ascontiguousarray(dom.labels, dtype="<i8").tobytes()).hexdigest()
                h.update(json.dumps([sorted((k, repr(v)) for k, v in desc.items()), repr(ident), labels]).encode())
            self._data_digest = h.hexdigest()[:16]
        return self._data_digest

    def batch(self, i: int) -> Batch:
        """Batch number ``i`` (random access, used by DataLoader workers)."""
        b, start, stop = self.plan[i]
        block = self.order.blocks[b]
        dom = block.domain[start:stop]
        idx = block.index[start:stop]
        ids = np.unique(dom)
        if len(ids) == 1:
            x = self.domains[ids[0]].load(idx)
        else:
            x = None
            for d in ids:
                sel = np.flatnonzero(dom == d)
                part = self.domains[d].load(idx[sel])
                if x is None:
                    x = part.new_empty((len(idx), *part.shape[1:]))
                x[torch.from_numpy(sel)] = part
        dom_t, idx_t = torch.from_numpy(dom.copy()), torch.from_numpy(idx.copy())
        y = torch.empty(len(idx), dtype=torch.int64)
        for d in ids:
            sel = torch.from_numpy(np.flatnonzero(dom == d))
            y[sel] = self._y[d][idx_t[sel]]
        reset = start == 0 and (self.reset_each_block or b == 0)
        return Batch(x, y, dom_t, idx_t, b, reset)

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """The batches from number ``start`` on (to resume an interrupted pass)."""
        if self.num_workers <= 0:
            for i in range(start, len(self.plan)):
                yield self.batch(i)
            return
        loader = torch.utils.data.DataLoader(
            _Batches(self, start), batch_size=None, shuffle=False, num_workers=self.num_workers,
            collate_fn=_identity, persistent_workers=False,
        )
        yield from loader

    def describe(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint(),
            "order_fingerprint": self.order.fingerprint(),
            "data_digest": self.data_digest(),
            "num_samples": self.num_samples,
            "num_batches": len(self),
            "batch_size": self.batch_size,
            "reset_each_block": self.reset_each_block,
            "domains": [d.describe() for d in self.domains],
            "blocks": [[int(x) for x in np.unique(b.domain)] for b in self.order.blocks],
            **self.order.meta,
        }

    def export_order(self, path: str | Path) -> None:
        self.order.save(path)


def _identity(batch: Batch) -> Batch:
    return batch


class _Batches(torch.utils.data.Dataset):
    def __init__(self, stream: Stream, start: int = 0) -> None:
        self.stream = stream
        self.start = start

    def __len__(self) -> int:
        return len(self.stream) - self.start

    def __getitem__(self, i: int) -> Batch:
        return self.stream.batch(self.start + i)


def make_stream(
    source: Any,
    shift: str = "continual",
    *,
    domains: Sequence[str] | None = None,
    severity: int = 5,
    batch_size: int = 64,
    seed: int = 2020,
    n_examples: int | None = None,
    delta: float | None = None,
    sort_labels: bool = False,
    order_file: str | Path | None = None,
    num_workers: int | None = None,
    protocol: str = "tta",
) -> Stream:
    """Build a stream from a domain ``source`` (see ``tta.data``) and a shift protocol.

    ``domains`` defaults to the source's canonical order (the 15 corruptions
    gaussian_noise ... jpeg_compression for CIFAR-10-C). ``order_file`` replays
    an exported order instead of drawing one from ``seed``. ``protocol`` picks how the
    order is drawn: tta's own (``"tta"``) or the reference framework's (``"reference"``),
    see ``build_order``.
    """
    spec = get_shift(shift)
    if not 1 <= int(severity) <= 5:
        raise InputError(f"severity must be 1..5, got {severity}; pass --severity 1..5")
    if n_examples is not None and n_examples < 1:
        raise InputError(f"--n-examples must be >= 1, got {n_examples}")
    if delta is not None and sort_labels:
        raise InputError("--delta and --sorted both set the label order; pass only one of them")
    names = list(domains) if domains else list(getattr(source, "default_domains", lambda: source.corruptions)())
    if not names:
        raise InputError("no domains to stream; pass --domains with at least one corruption")
    source.check_domains(names)
    if spec.correlated_parity is not None and delta is None and not sort_labels and order_file is None:
        raise InputError(f"shift {spec.name!r} switches between i.i.d. and correlated labels and needs a label "
                         f"correlation; pass --delta 0.1 (or --sorted), or {spec.name}@0.1 in a sweep grid")
    block_keys = spec.blocks(names, int(severity))
    keys: list[tuple[str, int]] = []
    for block in block_keys:
        for key in block:
            if key not in keys:
                keys.append(key)
    doms = [source.domain(name, sev) for name, sev in keys]
    described = [{"name": d.name, "severity": d.severity, "size": len(d)} for d in doms]
    if order_file is not None:
        order = StreamOrder.load(order_file, described)
    else:
        blocks = build_order(
            [d.labels for d in doms],
            [[keys.index(k) for k in block] for block in block_keys],
            seed,
            n_examples=n_examples,
            delta=delta,
            sort_labels=sort_labels,
            protocol=protocol,
            correlated=[spec.correlated(b) for b in range(len(block_keys))],
        )
        order = StreamOrder(described, blocks)
    if n_examples is not None:  # the count actually drawn: a domain smaller than n_examples gives all it has
        used = sorted({min(n_examples, d["size"]) for d in described})
        n_examples = used[0] if len(used) == 1 else used
    drawn = {"shift": spec.name, "seed": seed, "severity": int(severity), "n_examples": n_examples,
             "delta": delta, "sorted": sort_labels, "protocol": protocol}
    if order_file is not None:
        if "delta" in order.meta:  # a tta order with its protocol: record that, not this command's flags
            if order.meta.get("shift") not in (None, spec.name):
                raise InputError(f"order file {order_file} was drawn for --shift {order.meta['shift']}; pass that shift")
            drawn = {**drawn, **{k: order.meta[k] for k in ("seed", "severity", "n_examples", "delta", "sorted", "protocol")
                                  if k in order.meta}}
        else:  # hand-made or .npy: how it was drawn is unknown
            drawn = {**drawn, "n_examples": None, "delta": None, "sorted": False,
                     "protocol": "unknown (replayed order without its protocol)"}
    order.meta.update(drawn)
    return Stream(doms, order, batch_size, reset_each_block=spec.reset_each_block, num_workers=num_workers)
