"""Gradient methods composed over a statistics policy that keeps state across forwards.

DeYO (its shuffled-patch forward) and ROID (its augmented consistency forward) run a second forward
before ``backward()``. A stateful policy (tbn-ema, adab2n, momentum-decay) updates its running
statistics in that forward; the first forward's graph must still hold the values it normalized with,
or ``backward()`` fails ("modified by an inplace operation"), as every such composition did.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tta
from conftest import to_tensor
from tta.methods import METHODS, get_method

STATEFUL = ["tbn-ema", "adab2n", "momentum-decay"]
COMPOSING = sorted(n for n in METHODS if get_method(n).composes_stats and get_method(n).needs_grad)


def _accepts(method: str, stats: str) -> bool:
    option = next(o for o in get_method(method).options.options if o.name == "stats")
    return not option.choices or stats in option.choices


PAIRS = [(m, s) for m in COMPOSING for s in STATEFUL if _accepts(m, s)]


@pytest.fixture(scope="module")
def noisy_batches(cifar10_test):
    images, _ = cifar10_test
    x = to_tensor(images[np.random.default_rng(0).permutation(len(images))[:48]])
    x = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp_(0, 1)
    return x.split(16)


@pytest.mark.realdata
@pytest.mark.parametrize(("method", "stats"), PAIRS)
def test_gradient_method_over_a_stateful_policy_steps_and_moves_the_statistics(
        method, stats, noisy_batches, resnet20_checkpoint, tmp_path):
    model = tta.load_model("resnet20", checkpoint=resnet20_checkpoint)
    options = {}
    if method == "eata":  # EATA needs clean source images for its Fisher regularizer
        source = tmp_path / "source.npy"
        np.save(source, (noisy_batches[0].permute(0, 2, 3, 1) * 255).to(torch.uint8).numpy())
        options = {"source_data": str(source), "fisher_samples": 16, "fisher_batch": 8}
    torch.manual_seed(0)
    adapted = tta.adapt(model, method, stats=stats, dataset="cifar10", run_seed=0, **options)
    before = {k: v.clone() for k, v in adapted.state_dict().items() if k.endswith("running_mean")}
    assert before, "the policy keeps no running statistics to check"
    for x in noisy_batches:
        assert torch.isfinite(adapted(x)).all()
    after = adapted.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the policy did update
