"""Stream protocols: the reference framework's exact sample order, per-domain subsets, one seed for every draw."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import tta
from tta.pipeline.config import RunConfig
from tta.pipeline.prepare import prepare
from tta.methods.unmix_tns import UnMixTNS2d
from tta.streams import build_order


# -- an independent transcription of the reference sampler -------------------------------------------
# mariodoebler/test-time-adaptation classification/datasets/data_loading.py (same in the UnMix-TNS fork):
# get_test_loader reseeds `random` and numpy with the run seed for every domain, then
# random.shuffle(samples); samples = random.sample(samples, k=NUM_EX); samples = sort_by_dirichlet(delta, samples).
def reference_sort_by_dirichlet(delta, samples):
    N = len(samples)
    samples_sorted = []
    class_labels = np.array([val[1] for val in samples])
    num_classes = int(np.max(class_labels) + 1)
    min_size = -1
    while min_size < 10:
        idx_batch = [[] for _ in range(num_classes)]
        idx_batch_cls = [[] for _ in range(num_classes)]
        for k in range(num_classes):
            idx_k = np.where(class_labels == k)[0]
            np.random.shuffle(idx_k)
            proportions = np.random.dirichlet(np.repeat(delta, num_classes))
            proportions = np.array([p * (len(idx_j) < N / num_classes) for p, idx_j in zip(proportions, idx_batch)])
            proportions = proportions / proportions.sum()
            proportions = (np.cumsum(proportions) * len(idx_k)).astype(int)[:-1]
            idx_batch = [idx_j + idx.tolist() for idx_j, idx in zip(idx_batch, np.split(idx_k, proportions))]
            min_size = min([len(idx_j) for idx_j in idx_batch])
            for idx_j, idx in zip(idx_batch_cls, np.split(idx_k, proportions)):
                idx_j.append(idx)
    for chunk in idx_batch_cls:
        cls_seq = list(range(num_classes))
        np.random.shuffle(cls_seq)
        for cls in cls_seq:
            samples_sorted.extend([samples[i] for i in chunk[cls]])
    return samples_sorted


def reference_loader_order(samples, seed, num_ex, delta):
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        random.seed(seed)
        np.random.seed(seed)
        samples = list(samples)
        random.shuffle(samples)
        if num_ex != -1:
            samples = random.sample(samples, k=min(num_ex, len(samples)))
        if delta > 0:
            samples = reference_sort_by_dirichlet(delta, samples)
        return samples
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@pytest.mark.realdata
def test_reference_protocol_is_the_reference_sampler_index_for_index(cifar10_test):
    labels = np.asarray(cifar10_test[1], dtype=np.int64)
    # continual / single domain: each domain reseeded, so every domain gets the same order
    ref = reference_loader_order([(i, int(y), "gaussian_noise") for i, y in enumerate(labels)], 2020, 5000, 0.1)
    blocks = build_order([labels, labels], [[0], [1]], 2020, n_examples=5000, delta=0.1, protocol="reference")
    for d, block in enumerate(blocks):
        np.testing.assert_array_equal(block.index, [s[0] for s in ref])
        np.testing.assert_array_equal(block.domain, np.full(5000, d))
    run_length = np.mean(np.diff(np.flatnonzero(np.r_[True, np.diff(labels[blocks[0].index]) != 0, True])))
    assert run_length > 20  # label-correlated, not shuffled (about 1.1 for an i.i.d. stream)


@pytest.mark.realdata
def test_reference_protocol_mixed_pools_then_subsamples_like_the_reference(cifar10_test):
    labels = np.asarray(cifar10_test[1], dtype=np.int64)
    names = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur"]
    pooled = [(i, int(y), name) for name in names for i, y in enumerate(labels)]  # create_cifarc_dataset's order
    ref = reference_loader_order(pooled, 2020, 5000, 0.1)
    [block] = build_order([labels] * len(names), [list(range(len(names)))], 2020, n_examples=5000, delta=0.1,
                          protocol="reference")
    np.testing.assert_array_equal(block.index, [s[0] for s in ref])
    np.testing.assert_array_equal(block.domain, [names.index(s[2]) for s in ref])
    assert len(set(block.domain.tolist())) == len(names)


def test_reference_protocol_without_subset_or_correlation_is_one_shuffle():
    labels = np.arange(50) % 10
    ref = reference_loader_order([(i, int(y)) for i, y in enumerate(labels)], 7, -1, 0.0)
    [block] = build_order([labels], [[0]], 7, protocol="reference")
    np.testing.assert_array_equal(block.index, [s[0] for s in ref])


# -- tta's protocol: each domain's images do not depend on the shift or label order ---------------------
def test_tta_protocol_gives_each_domain_the_same_subset_under_every_setting():
    labels = [np.arange(300) % 10, (np.arange(300) * 7) % 10]
    subset = None
    for kw in ({}, {"delta": 0.1}, {"sort_labels": True}):
        for blocks in (build_order(labels, [[0], [1]], 5, n_examples=120, **kw),
                       build_order(labels, [[0, 1]], 5, n_examples=120, **kw)):
            got = [sorted(np.concatenate([b.index[b.domain == d] for b in blocks]).tolist()) for d in (0, 1)]
            subset = subset or got
            assert got == subset
    other = build_order(labels, [[0], [1]], 6, n_examples=120)
    assert sorted(other[0].index.tolist()) != subset[0]


@pytest.mark.realdata
def test_source_per_domain_errors_are_identical_across_iid_continual_and_dirichlet(small_cifar_c_dir, resnet20_checkpoint):
    common = dict(method="source", data_dir=str(small_cifar_c_dir), dataset="cifar10", model="resnet20",
                  checkpoint=str(resnet20_checkpoint), domains=["noise_low", "noise_high"], n_examples=120,
                  batch_size=40, seed=2020)
    runs = {
        "iid": RunConfig(shift="iid", **common),
        "continual": RunConfig(shift="continual", **common),
        "delta 0.1": RunConfig(shift="continual", delta=0.1, **common),
        "mixed": RunConfig(shift="mixed", **common),
    }
    outcomes = {k: tta.run(cfg) for k, cfg in runs.items()}  # in memory: no output, no progress file
    assert all(o.output is None and o.resumed_at_batch == 0 for o in outcomes.values())
    docs = {k: o.doc for k, o in outcomes.items()}
    fingerprints = {k: d["stream"]["fingerprint"] for k, d in docs.items()}
    assert len({fingerprints["iid"], fingerprints["delta 0.1"], fingerprints["mixed"]}) == 3  # different orders...
    errors = {k: d["metrics"]["domain_errors"] for k, d in docs.items()}
    assert all(e == errors["iid"] for e in errors.values()), errors  # ...the same images per domain
    assert errors["iid"]["noise_high"] > errors["iid"]["noise_low"]


# -- one seed drives every draw ---------------------------------------------------------------------------
def _components(prepared) -> torch.Tensor:
    return torch.cat([m.mu_k.flatten() for m in prepared.adapted.modules() if isinstance(m, UnMixTNS2d)])


@pytest.mark.realdata
def test_the_run_seed_drives_unmix_tns_components_and_the_stream(small_cifar_c_dir, resnet20_checkpoint):
    def prep(seed):
        return prepare(RunConfig(method="unmix-tns", data_dir=str(small_cifar_c_dir), dataset="cifar10",
                                 model="resnet20", checkpoint=str(resnet20_checkpoint), domains=["noise_low"],
                                 delta=0.1, batch_size=50, seed=seed))

    a, a2, b = prep(2020), prep(2020), prep(2021)
    assert torch.equal(_components(a), _components(a2))
    assert a.hparams["seed"] is None  # follows the run seed, so seeds of one setting stay one leaderboard row
    assert a.stream.fingerprint() == a2.stream.fingerprint()
    assert not torch.allclose(_components(a), _components(b))
    assert a.stream.fingerprint() != b.stream.fingerprint()
    x = a.stream.batch(0).x
    with torch.no_grad():
        assert torch.equal(a.adapted(x), a2.adapted(x))


def test_unmix_tns_components_follow_torch_manual_seed():
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()

    def components(seed):
        torch.manual_seed(seed)
        adapted = tta.adapt(net, "unmix-tns", K=4)
        return torch.cat([m.mu_k.flatten() for m in adapted.modules() if isinstance(m, UnMixTNS2d)])

    assert torch.equal(components(5), components(5))
    assert not torch.allclose(components(5), components(6))


@pytest.mark.realdata
def test_tta_run_protocol_reference_streams_the_reference_order_and_records_it(small_cifar_c_dir, resnet20_checkpoint):
    cfg = RunConfig(method="source", data_dir=str(small_cifar_c_dir), dataset="cifar10", model="resnet20",
                    checkpoint=str(resnet20_checkpoint), domains=["noise_low", "noise_high"], shift="mixed",
                    n_examples=150, batch_size=50, seed=2021, protocol="reference")
    prepared = prepare(cfg)
    labels = prepared.stream.domains[0].labels
    pooled = [(i, int(y), name) for name in ("noise_low", "noise_high") for i, y in enumerate(labels)]
    ref = reference_loader_order(pooled, 2021, 150, 0.0)
    [block] = prepared.stream.order.blocks
    np.testing.assert_array_equal(block.index, [s[0] for s in ref])
    np.testing.assert_array_equal(block.domain, [("noise_low", "noise_high").index(s[2]) for s in ref])
    assert prepared.stream.describe()["protocol"] == "reference"
