"""The shared ResNet-20 on shared CIFAR-10 test images with Gaussian noise: what adaptation buys,
how batch statistics collapse on class-sorted streams, and how UnMix-TNS resists.

A 2,000-image slice (every 5th image, 200 per class) keeps CI fast;
benchmarks/bench_methods_realdata.py runs the same protocol on all 10,000 images.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import tta
from conftest import to_tensor

log = logging.getLogger(__name__)


def online_error(adapter, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> float:
    wrong = 0
    for i in range(0, len(x), batch):
        wrong += int((adapter(x[i : i + batch]).argmax(1) != y[i : i + batch]).sum())
    return 100.0 * wrong / len(x)


@pytest.mark.realdata
@pytest.mark.slow
def test_tbn_gains_iid_collapses_sorted_and_unmix_tns_resists(cifar10_test, resnet20_checkpoint):
    images, labels = cifar10_test
    idx = np.arange(0, len(images), 5)  # rows are sorted by class, so this slice is class-sorted
    x = to_tensor(images[idx])
    x = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp_(0, 1)
    y = torch.from_numpy(np.asarray(labels[idx]))
    shuffle = torch.randperm(len(idx), generator=torch.Generator().manual_seed(1))
    model = tta.load_model("resnet20", checkpoint=resnet20_checkpoint)

    source = online_error(tta.adapt(model, "source"), x, y)  # order does not matter for the source
    tbn_iid = online_error(tta.adapt(model, "tbn"), x[shuffle], y[shuffle])
    tbn_sorted = online_error(tta.adapt(model, "tbn"), x, y)
    # UnMix-TNS's component noise varies with the seed, and so does its error (57.9 to 77.5 % on this
    # slice over seeds 0-3, 2020, 2021): judge it over the reference's three seeds, not one lucky draw.
    unmix_sorted = [online_error(tta.adapt(model, "unmix-tns", K=16, seed=s), x, y) for s in (2020, 2021, 2022)]
    log.info("source %.1f tbn-iid %.1f tbn-sorted %.1f unmix-sorted %s", source, tbn_iid, tbn_sorted, unmix_sorted)

    assert tbn_iid <= source - 20, (source, tbn_iid)
    assert tbn_sorted >= tbn_iid + 20, (tbn_iid, tbn_sorted)
    assert max(unmix_sorted) < tbn_sorted and np.mean(unmix_sorted) <= tbn_sorted - 10, (tbn_sorted, unmix_sorted)
