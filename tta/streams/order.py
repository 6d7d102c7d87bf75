"""The order of a stream: blocks of (domain id, sample index), computed up front from a seed.

An order is saved as JSON (human-readable, carries the domain list) or as ``.npy``
(an int64 array with one row per sample: block, domain id, sample index; the
domain ids refer to the run's own ``--domains`` list).
"""
from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, InputError
from ..atomic import write_bytes
from ..schema import INT, Check, ListOf, problem
from .dirichlet import class_sorted_order, dirichlet_order

ORDER_FORMAT = "tta.order"
ORDER_VERSION = 1
#: how an order was drawn; a replayed JSON order carries them, so a replay is filed under its real setting
PROTOCOL_KEYS = ("shift", "seed", "severity", "n_examples", "delta", "sorted")


@dataclass
class Block:
    """Consecutive samples of a stream; with an ``iid`` shift the model resets before each block."""

    domain: np.ndarray  # int64 domain id per sample
    index: np.ndarray  # int64 sample index within its domain

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class StreamOrder:
    """Every sample of a stream, in order, grouped in blocks, with the domains they refer to."""

    domains: list[dict[str, Any]]  # name, severity, size of each domain id
    blocks: list[Block]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(b) for b in self.blocks)

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the domain list and every (block, domain, index)."""
        h = hashlib.sha256()
        h.update(json.dumps([[d["name"], d["severity"], d["size"]] for d in self.domains]).encode())
        for block in self.blocks:
            h.update(b"|")
            h.update(np.ascontiguousarray(block.domain, dtype="<i8").tobytes())
            h.update(np.ascontiguousarray(block.index, dtype="<i8").tobytes())
        return h.hexdigest()[:16]

    def as_rows(self) -> np.ndarray:
        """(T, 3) int64: block, domain id, sample index, in stream order."""
        rows = [np.stack([np.full(len(b), i, dtype=np.int64), b.domain, b.index], axis=1) for i, b in enumerate(self.blocks)]
        return np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)

    def validate(self, sizes: Sequence[int]) -> None:
        """Check that every domain id and sample index exists in domains of ``sizes``."""
        for b, block in enumerate(self.blocks):
            if len(block) == 0:
                raise InputError(f"block {b} of the order is empty; remove it from the order file")
            if block.domain.min() < 0 or block.domain.max() >= len(sizes):
                raise InputError(
                    f"block {b} of the order refers to domain {int(block.domain.max())}, but the run has "
                    f"{len(sizes)} domains; pass the same --domains/--shift as the run that exported it"
                )
            limit = np.asarray(sizes)[block.domain]
            bad = np.flatnonzero((block.index < 0) | (block.index >= limit))
            if len(bad):
                i = bad[0]
                raise InputError(
                    f"block {b} of the order asks for sample {int(block.index[i])} of a domain with {int(limit[i])} "
                    "samples; pass the dataset and --severity of the run that exported it"
                )

    # -- files --------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the order as ``.json`` or ``.npy`` (chosen by the suffix), atomically."""
        path = Path(path)
        if path.suffix == ".npy":
            buf = io.BytesIO()
            np.save(buf, self.as_rows())
            write_bytes(path, buf.getvalue())
        elif path.suffix == ".json":
            doc = {
                "format": ORDER_FORMAT,
                "version": ORDER_VERSION,
                "fingerprint": self.fingerprint(),
                "meta": self.meta,
                "domains": self.domains,
                "blocks": [_block_json(b) for b in self.blocks],
            }
            write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())
        else:
            raise InputError(f"order file {path} must end in .json or .npy; rename it")

    @classmethod
    def load(cls, path: str | Path, domains: list[dict[str, Any]]) -> "StreamOrder":
        """Read an order written by ``save`` (or by hand); ``domains`` is the run's domain list."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"order file {path} is missing; pass a file written by --export-order")
        if path.suffix == ".npy":
            try:
                rows = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise DataError(f"order file {path} is not a readable .npy ({exc}); re-export it with --export-order") from None
            if rows.ndim != 2 or rows.shape[1] != 3 or not np.issubdtype(rows.dtype, np.integer):
                raise DataError(
                    f"order file {path} holds a {rows.dtype} array of shape {rows.shape}; "
                    "expected integer rows (block, domain id, sample index)"
                )
            rows = rows.astype(np.int64)
            starts = np.flatnonzero(np.r_[True, rows[1:, 0] != rows[:-1, 0]]) if len(rows) else np.zeros(0, int)
            blocks = [Block(r[:, 1].copy(), r[:, 2].copy()) for r in np.split(rows, starts[1:])] if len(rows) else []
            order = cls(domains, blocks, {"replayed_from": str(path)})
        elif path.suffix == ".json":
            try:
                doc = json.loads(path.read_text())
                blocks = [_block_from_json(b) for b in doc["blocks"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"order file {path} is not a tta order ({exc}); re-export it with --export-order") from None
            saved = doc.get("domains")
            if saved is not None:
                want = [(d["name"], d["severity"]) for d in domains]
                got = [(d["name"], d["severity"]) for d in saved]
                if want != got:
                    raise InputError(
                        f"order file {path} was made for domains {_fmt_domains(got)}, this run has {_fmt_domains(want)}; "
                        "pass the same --domains, --severity and --shift as the exporting run"
                    )
            order = cls(domains, blocks, {"replayed_from": str(path)})
            meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
            # the protocol an order was built with is trusted only while its blocks are the ones fingerprinted
            if meta and doc.get("fingerprint") == order.fingerprint():
                order.meta.update({k: meta[k] for k in PROTOCOL_KEYS if k in meta})
        else:
            raise InputError(f"order file {path} must end in .json or .npy; rename it")
        if not order.blocks:
            raise DataError(f"order file {path} holds no samples; re-export it with --export-order")
        order.validate([d["size"] for d in domains])
        return order


def _fmt_domains(keys: list[tuple[str, int]]) -> str:
    text = ",".join(f"{n}@{s}" for n, s in keys[:4])
    return text + (",..." if len(keys) > 4 else "")


def _block_json(block: Block) -> dict[str, Any]:
    ids = np.unique(block.domain)
    domain: int | list[int] = int(ids[0]) if len(ids) == 1 else block.domain.tolist()
    return {"domain": domain, "index": block.index.tolist()}


#: one block of a JSON order: integer sample indices (1.7 is refused, not truncated), one domain id or one per sample
ORDER_BLOCK = {"index": ListOf(INT, min_len=1), "domain": (Check("an integer or a list of integers",
               lambda v: problem(v, INT) is None or problem(v, ListOf(INT)) is None))}


def _block_from_json(obj: dict[str, Any]) -> Block:
    found = problem(obj, ORDER_BLOCK, "block")
    if found:
        raise ValueError(found)
    index = np.asarray(obj["index"], dtype=np.int64)
    dom = obj["domain"]
    domain = np.full(len(index), int(dom), dtype=np.int64) if isinstance(dom, int) else np.asarray(dom, dtype=np.int64)
    if domain.shape != index.shape:
        raise ValueError("'domain' and 'index' lengths differ")
    return Block(domain, index)


#: how a stream's sample order is drawn from its seed (docs/running.md, "Protocols")
PROTOCOLS = ("tta", "reference")


def build_order(
    labels: Sequence[np.ndarray],
    block_domains: Sequence[Sequence[int]],
    seed: int,
    *,
    n_examples: int | None = None,
    delta: float | None = None,
    sort_labels: bool = False,
    protocol: str = "tta",
    correlated: Sequence[bool] | None = None,
) -> list[Block]:
    """Blocks of a stream: which samples, in which order.

    ``protocol="tta"`` (the default): each domain's subset and base order come from its
    own draw seeded with ``seed`` alone (``SeedSequence(seed, spawn_key=(0,))``), so a domain
    holds the same images, in the same base order, under every shift and label order
    (``n_examples`` is per domain on every shift, the mixed one included). A block of
    several domains is pooled and shuffled, then its labels are correlated by the
    Dirichlet sort (``delta``) or sorted (``sort_labels``), with the block's own
    generator (``spawn_key=(1, block)``).

    ``protocol="reference"``: the sample order of mariodoebler/test-time-adaptation and
    its UnMix-TNS fork (``get_test_loader``), call for call. For every block, Python's
    ``random`` and numpy's legacy generator are reseeded with ``seed``; the block's
    samples (its domains' rows, domain after domain) are ``random.shuffle``-d, then
    ``random.sample``-d down to ``n_examples`` (the reference's NUM_EX: of the pooled
    set on the mixed shift), then ``sort_by_dirichlet``-ed or sorted by label.

    ``correlated`` (one flag per block; None: every block) limits the label correlation to the
    flagged blocks, the others keep their i.i.d. order (the ``switching`` shifts). A block's
    draws do not depend on the flags of the others.
    """
    if correlated is not None and len(correlated) != len(block_domains):
        raise InputError(f"{len(correlated)} correlation flags for {len(block_domains)} blocks; pass one per block")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown stream protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if protocol == "reference":
        return _reference_order(labels, block_domains, seed, n_examples, delta, sort_labels, correlated)
    base: dict[int, np.ndarray] = {}
    blocks = []
    for b, members in enumerate(block_domains):
        doms, idxs = [], []
        for d in members:
            if d not in base:
                perm = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))).permutation(len(labels[d]))
                base[d] = perm[:n_examples] if n_examples is not None else perm
            doms.append(np.full(len(base[d]), d, dtype=np.int64))
            idxs.append(base[d].astype(np.int64))
        domain, index = np.concatenate(doms), np.concatenate(idxs)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, b)))
        if len(members) > 1:
            mix = rng.permutation(len(index))
            domain, index = domain[mix], index[mix]
        if (sort_labels or delta is not None) and (correlated is None or correlated[b]):
            y_stream = _labels_of(labels, members, domain, index)
            perm = class_sorted_order(y_stream) if sort_labels or delta == 0 else dirichlet_order(y_stream, delta, rng)
            domain, index = domain[perm], index[perm]
        blocks.append(Block(domain, index))
    return blocks


def _labels_of(labels: Sequence[np.ndarray], members: Sequence[int], domain: np.ndarray, index: np.ndarray) -> np.ndarray:
    y_all = np.concatenate([labels[d] for d in members])
    offset = np.zeros(max(members) + 1, dtype=np.int64)
    offset[list(members)] = np.cumsum([0] + [len(labels[d]) for d in members])[:-1]
    return y_all[offset[domain] + index]


def _reference_order(
    labels: Sequence[np.ndarray],
    block_domains: Sequence[Sequence[int]],
    seed: int,
    n_examples: int | None,
    delta: float | None,
    sort_labels: bool,
    correlated: Sequence[bool] | None = None,
) -> list[Block]:
    blocks = []
    for b, members in enumerate(block_domains):
        py_rng, np_rng = random.Random(seed), np.random.RandomState(seed)  # reseeded for every domain
        domain = np.concatenate([np.full(len(labels[d]), d, dtype=np.int64) for d in members])
        index = np.concatenate([np.arange(len(labels[d]), dtype=np.int64) for d in members])
        order = list(range(len(index)))  # shuffle and sample depend on the length only
        py_rng.shuffle(order)
        if n_examples is not None:
            order = py_rng.sample(order, k=min(n_examples, len(order)))
        domain, index = domain[order], index[order]
        if (sort_labels or delta is not None) and (correlated is None or correlated[b]):
            y_stream = _labels_of(labels, members, domain, index)
            if sort_labels or delta == 0:
                perm = class_sorted_order(y_stream)  # list.sort(key=label) is stable too
            else:
                perm = dirichlet_order(y_stream, delta, np_rng, strict=True)
            domain, index = domain[perm], index[perm]
        blocks.append(Block(domain, index))
    return blocks
