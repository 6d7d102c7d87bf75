"""benchmarks/bitda_order.py: RoTTA's own stream order, against a transcription of its sampler."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tta.streams.order import StreamOrder

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bitda_order.py"


@pytest.fixture(scope="module")
def bitda():
    spec = importlib.util.spec_from_file_location("bitda_order", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def official_iter(domain_items, labels_of, gamma, num_class):
    """LabelDirichletDomainSequence.__iter__ (BIT-DA/RoTTA core/data/ttasampler.py) with lists, as written there."""
    final = []
    for domain in sorted(domain_items):
        indices = np.array(domain_items[domain])
        labels = np.array([labels_of[i] for i in indices])
        class_indices = [np.argwhere(labels == y).flatten() for y in range(num_class)]
        slot_indices = [[] for _ in range(num_class)]
        dist = np.random.dirichlet([gamma] * num_class, num_class)
        for c_ids, partition in zip(class_indices, dist):
            for s, ids in enumerate(np.split(c_ids, (np.cumsum(partition)[:-1] * len(c_ids)).astype(int))):
                slot_indices[s].append(ids)
        for s_ids in slot_indices:
            perm = np.random.permutation(range(len(s_ids)))
            ids = []
            for i in perm:
                ids.extend(s_ids[i])
            final.extend(indices[ids])
    return final


@pytest.mark.parametrize("n_examples", [None, 300])
def test_order_equals_the_official_sampler_for_the_same_seed(bitda, n_examples):
    rng = np.random.default_rng(5)
    labels = np.sort(rng.integers(0, 10, 1000))  # class-sorted, like the shared test set
    rows = bitda.bitda_rows(labels, 3, 0.1, seed=7, n_examples=n_examples)
    subset = np.arange(1000) if n_examples is None else np.sort(
        np.random.default_rng(7).choice(1000, n_examples, replace=False))
    # the official dataset lists every domain's items one domain after the other
    items, labels_of = {}, []
    for d in range(3):
        items[d] = list(range(len(labels_of), len(labels_of) + len(subset)))
        labels_of.extend(labels[subset])
    np.random.seed(7)
    flat = np.asarray(official_iter(items, labels_of, 0.1, 10))
    n = len(subset)
    assert np.array_equal(rows[:, 1], flat // n)  # domain of each sample
    assert np.array_equal(rows[:, 2], subset[flat % n])  # image of each sample
    for d in range(3):  # each domain shows every image of its subset exactly once
        assert np.array_equal(np.sort(rows[rows[:, 1] == d, 2]), subset)


def test_small_gamma_gives_long_single_class_runs_and_large_gamma_mixes(bitda):
    labels = np.repeat(np.arange(10), 100)

    def label_changes(gamma):
        counts = []
        for seed in range(5):
            rows = bitda.bitda_rows(labels, 1, gamma, seed=seed, n_examples=None)
            counts.append(int((np.diff(labels[rows[:, 2]]) != 0).sum()))
        return np.mean(counts)

    few, some, many = label_changes(0.01), label_changes(0.1), label_changes(1e4)
    # gamma -> 0 puts each class almost whole into one slot (10 runs at the limit); gamma large spreads
    # every class over all 10 slots (100 runs at the limit)
    assert few <= 30 and many >= 90 and few < some < many, (few, some, many)


def test_rows_load_as_a_tta_order(bitda, tmp_path):
    labels = np.repeat(np.arange(10), 20)
    rows = bitda.bitda_rows(labels, 2, 0.1, seed=1, n_examples=None)
    np.save(tmp_path / "o.npy", rows)
    domains = [{"name": n, "severity": 5, "size": 200} for n in bitda.BITDA_DOMAINS[:2]]
    order = StreamOrder.load(tmp_path / "o.npy", domains)
    assert len(order) == 400 and len(order.blocks) == 1
