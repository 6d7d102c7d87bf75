"""``regime-aware``: the label-correlation detector on constructed streams, and the two regimes' behaviour."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tta
from tta.methods.regime_aware import ENTER, LEAVE, RHO, WARMUP, RegimeDetector, dominant_share
from tta.methods.unmix_tns import UnMixTNS2d, stratified_noise
from tta.models import load_model

from conftest import to_tensor


def _iid_preds(gen: torch.Generator, n: int = 64) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=gen)


def _correlated_preds(gen: torch.Generator, cls: int, n: int = 64, hit: float = 0.5) -> torch.Tensor:
    """A batch of one class, predicted right with probability ``hit`` and uniformly otherwise."""
    pred = torch.randint(0, 10, (n,), generator=gen)
    return torch.where(torch.rand(n, generator=gen) < hit, torch.full_like(pred, cls), pred)


def test_dominant_share_closed_forms():
    assert float(dominant_share(torch.arange(10).repeat(6), 10)) == pytest.approx(0.1)
    assert float(dominant_share(torch.full((64,), 3), 10)) == 1.0
    assert float(dominant_share(torch.tensor([1, 1, 2, 5]), 10)) == 0.5


def test_detector_stays_iid_on_iid_batches_and_switches_on_single_class_batches():
    gen = torch.Generator().manual_seed(0)
    det = RegimeDetector(RHO, ENTER, LEAVE, WARMUP)
    flags = [det.update(dominant_share(_iid_preds(gen), 10)) for _ in range(200)]
    assert not any(flags) and int(det.switches) == 0
    det = RegimeDetector(RHO, ENTER, LEAVE, WARMUP)
    flags = [det.update(dominant_share(_correlated_preds(gen, (t // 5) % 10), 10)) for t in range(200)]
    assert not any(flags[:WARMUP - 1])  # never during the warm-up
    assert all(flags[WARMUP - 1:]) and int(det.switches) == 1


# Stated switching delays with the defaults (rho 0.1, enter 0.40, leave 0.28): from the i.i.d. level
# (share about 0.2) to a correlated one of 0.55, the average needs 9 batches to pass 0.40
# (0.55 - 0.35 * 0.9^k > 0.40); back from 0.55 to 0.2 it needs 15 to fall below 0.28
# (0.2 + 0.35 * 0.9^k < 0.28); the constructed batches' shares scatter around those levels.
SWITCH_TO_CORRELATED, SWITCH_TO_IID = 16, 16


def test_a_switch_mid_stream_is_followed_within_the_stated_number_of_batches():
    gen = torch.Generator().manual_seed(1)
    det = RegimeDetector(RHO, ENTER, LEAVE, WARMUP)
    stream = [("iid", None)] * 80 + [("corr", t // 6 % 10) for t in range(80)] + [("iid", None)] * 80
    flags = []
    for kind, cls in stream:
        pred = _iid_preds(gen) if kind == "iid" else _correlated_preds(gen, cls, hit=0.6)
        flags.append(det.update(dominant_share(pred, 10)))
    first_corr = flags.index(True)
    assert 80 <= first_corr < 80 + SWITCH_TO_CORRELATED
    back = flags.index(False, first_corr)
    assert 160 <= back < 160 + SWITCH_TO_IID
    assert not any(flags[back:]) and int(det.switches) == 2


def test_detector_rejects_leave_above_enter():
    with pytest.raises(tta.errors.TTAError, match="leave"):
        tta.adapt(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                                      torch.nn.Flatten(), torch.nn.Linear(4, 10)), "regime-aware", enter=0.2, leave=0.3)


def test_stratified_components_match_the_source_moments_exactly_for_every_seed():
    bn = torch.nn.BatchNorm2d(8)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    sorted_cols = None
    for seed in (0, 1):
        noise = stratified_noise(16, 8, torch.Generator().manual_seed(seed))
        layer = UnMixTNS2d(bn, 16, noise, alpha=0.5, tau=0.07, batch_size=None, batch_size_max=64)
        mixture_mean = layer.mu_k.mean(0)
        mixture_var = layer.var_k.mean(0) + layer.mu_k.var(0, unbiased=False)
        torch.testing.assert_close(mixture_mean, bn.running_mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(mixture_var, bn.running_var, atol=1e-5, rtol=1e-5)
        cols = noise.sort(dim=0).values
        assert torch.allclose(cols, cols[:, :1].expand_as(cols))  # every channel holds the same K values
        sorted_cols = cols if sorted_cols is None else sorted_cols
        torch.testing.assert_close(cols, sorted_cols)  # ... for every seed; only the order changes
    assert not torch.equal(stratified_noise(16, 8, torch.Generator().manual_seed(0)),
                           stratified_noise(16, 8, torch.Generator().manual_seed(1)))


# -- on the shared ResNet-20 and real CIFAR-10 test images ----------------------------------------------
@pytest.fixture(scope="module")
def resnet20(resnet20_checkpoint):
    return load_model("resnet20", checkpoint=resnet20_checkpoint)


def _batches(cifar10_test, correlated: bool, n_batches: int, size: int = 32):
    images, labels = cifar10_test
    rng = np.random.default_rng(0)
    if correlated:  # single-class batches, the class changing every 4 batches
        picks = [rng.choice(np.flatnonzero(labels == (b // 4) % 10), size, replace=False) for b in range(n_batches)]
    else:
        picks = [rng.choice(len(labels), size, replace=False) for _ in range(n_batches)]
    return [to_tensor(images[np.sort(p)]) for p in picks]


@pytest.mark.realdata
def test_iid_batches_give_eta_exactly(resnet20, cifar10_test):
    torch.manual_seed(0)
    ours = tta.adapt(resnet20, "regime-aware", dataset="cifar10")
    eta = tta.adapt(resnet20, "eta", dataset="cifar10")
    for x in _batches(cifar10_test, correlated=False, n_batches=30):
        torch.testing.assert_close(ours(x), eta(x).softmax(1), atol=1e-5, rtol=1e-4)
    assert not bool(ours.memory.detector.correlated) and int(ours.memory.detector.switches) == 0


@pytest.mark.realdata
def test_single_class_batches_switch_to_lame_over_unmix_tns_exactly(resnet20, cifar10_test):
    torch.manual_seed(0)
    ours = tta.adapt(resnet20, "regime-aware", dataset="cifar10")
    torch.manual_seed(0)  # the same UnMix-TNS components
    lame = tta.adapt(resnet20, "lame", dataset="cifar10", stats="unmix-tns", stats_options={"K": 16})
    batches = _batches(cifar10_test, correlated=True, n_batches=WARMUP + SWITCH_TO_CORRELATED + 8)
    switched_at = None
    for t, x in enumerate(batches):
        correlated_now = bool(ours.memory.detector.correlated)
        out, ref = ours(x), lame(x)
        if correlated_now:
            switched_at = t if switched_at is None else switched_at
            torch.testing.assert_close(out, ref)
    assert switched_at is not None and switched_at <= WARMUP + SWITCH_TO_CORRELATED
    assert int(ours.memory.detector.switches) == 1
