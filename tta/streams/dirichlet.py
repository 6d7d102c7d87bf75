"""Label-temporal correlation: the Dirichlet sort of NOTE / UnMix-TNS.

The procedure (``sort_by_dirichlet`` in mariodoebler/test-time-adaptation's
``classification/datasets/data_loading.py``, after NOTE's ``learner/dnn.py`` and
IBM's PFNM split; docs/running.md, "Protocols"):
the stream is cut into C chunks (C = number of classes); each class k spreads its
shuffled samples over the chunks with proportions p ~ Dir(δ·1_C), where chunks
already holding N/C samples get no more; this is redrawn until every chunk holds
at least 10 samples. The chunks are then emitted in order, and inside a chunk the
classes come in random order, each class's samples contiguous.

Small δ puts each class almost entirely in one chunk (long single-class runs);
large δ gives every chunk the same class mix. Because classes stay contiguous
inside a chunk, even δ → ∞ keeps runs of about N/C² samples: the chunks mix like
an i.i.d. stream, the order inside a chunk does not.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

MIN_CHUNK = 10
MAX_TRIES = 10_000


def dirichlet_order(
    labels: np.ndarray, delta: float, rng: np.random.Generator | np.random.RandomState, *, strict: bool = False
) -> np.ndarray:
    """A permutation of ``range(len(labels))`` correlated by label with concentration ``delta``.

    The draws are the reference's, call for call (``shuffle`` of each class's indices,
    ``dirichlet``, ``shuffle`` of each chunk's class order), so a ``RandomState`` seeded as
    the reference seeds numpy reproduces its order exactly. ``strict`` keeps the reference's
    10-sample minimum per chunk even for streams too short to meet it (it then fails).
    """
    labels = np.asarray(labels)
    if delta <= 0:
        raise InputError(f"--delta must be > 0 for the Dirichlet sort, got {delta}; use --sorted for a class-sorted stream")
    n = len(labels)
    num_classes = int(labels.max()) + 1 if n else 0
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cap = n / num_classes
    # A stream too short for C chunks of 10 gets the largest threshold it can meet.
    need = MIN_CHUNK if strict else min(MIN_CHUNK, n // num_classes)
    by_class = [np.flatnonzero(labels == k) for k in range(num_classes)]
    for _ in range(MAX_TRIES):
        sizes = np.zeros(num_classes, dtype=np.int64)
        parts: list[list[np.ndarray]] = [[] for _ in range(num_classes)]  # parts[chunk][class]
        for idx_k in by_class:
            idx_k = idx_k.copy()
            rng.shuffle(idx_k)
            p = rng.dirichlet(np.full(num_classes, float(delta)))
            p = p * (sizes < cap)
            p = p / p.sum()
            cuts = (np.cumsum(p) * len(idx_k)).astype(np.int64)[:-1]
            for j, piece in enumerate(np.split(idx_k, cuts)):
                parts[j].append(piece)
                sizes[j] += len(piece)
        if sizes.min() >= need:
            break
    else:
        # every chunk needs `need` samples and holds at most n/C, so n = C·need leaves no slack at all; in
        # tries on CIFAR-10 labels 1.5·C·need samples sufficed for every seed at δ = 0.01 to 1
        enough = int(1.5 * num_classes * MIN_CHUNK)
        raise InputError(
            f"could not spread {n} samples over {num_classes} label chunks of at least {need} each with "
            f"delta={delta}: a label-correlated stream of {num_classes} classes needs about {enough} samples per "
            f"block to be split for any seed; pass --n-examples {enough} or more (or a larger --delta)"
        )
    out = []
    for chunk in parts:
        classes = np.arange(num_classes)
        rng.shuffle(classes)
        for k in classes:
            out.append(chunk[k])
    return np.concatenate(out).astype(np.int64)


def class_sorted_order(labels: np.ndarray) -> np.ndarray:
    """Stable sort by label: the samples of class 0, then class 1, ... (δ = 0 in the reference framework)."""
    return np.argsort(np.asarray(labels), kind="stable").astype(np.int64)


def mean_run_length(labels: np.ndarray) -> float:
    """Mean length of the maximal runs of equal consecutive labels."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    runs = 1 + int(np.count_nonzero(labels[1:] != labels[:-1]))
    return len(labels) / runs
