"""``regime-aware``: the label-correlation detector on constructed streams, and the two regimes' behaviour."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import tta
from tta.methods.regime_aware import (
    ENTER, HISTORY, LEAVE, MIXED_ENTER, MIXED_LEAVE, RHO, WARMUP, MixingDetector, RegimeDetector, pair_agreement,
)
from tta.methods._gradient import norm_parameters
from tta.methods._stats_policy import get_stats
from tta.methods.unmix_tns import UnMixTNS2d, stratified_noise, unmix_momentum
from tta.models import load_model

from conftest import to_tensor


def _iid_preds(gen: torch.Generator, n: int = 64) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=gen)


def _correlated_preds(gen: torch.Generator, cls: int, n: int = 64, hit: float = 0.5) -> torch.Tensor:
    """A batch of one class, predicted right with probability ``hit`` and uniformly otherwise."""
    pred = torch.randint(0, 10, (n,), generator=gen)
    return torch.where(torch.rand(n, generator=gen) < hit, torch.full_like(pred, cls), pred)


def test_pair_agreement_closed_forms():
    # 10 classes, 6 images each: 10 * 6 * 5 agreeing ordered pairs of 60 * 59
    assert float(pair_agreement(torch.arange(10).repeat(6), 10)) == pytest.approx(300 / 3540)
    assert float(pair_agreement(torch.full((64,), 3), 10)) == 1.0
    assert float(pair_agreement(torch.tensor([1, 1, 2, 5]), 10)) == pytest.approx(2 / 12)
    assert float(pair_agreement(torch.tensor([0, 1]), 10)) == 0.0
    with pytest.raises(tta.errors.TTAError, match="at least 2"):
        pair_agreement(torch.tensor([4]), 10)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_pair_agreement_is_unbiased_at_every_batch_size(n):
    """Its mean over i.i.d. batches is sum_c q_c^2 whatever the batch size (the share of the most predicted
    class is not: about 0.52 at 4 images of 10 even classes, 0.2 at 64)."""
    gen = torch.Generator().manual_seed(n)
    q = torch.tensor([0.4, 0.2] + [0.05] * 8)
    draws = torch.multinomial(q, n * 4000, replacement=True, generator=gen).view(4000, n)
    mean = torch.stack([pair_agreement(d, 10) for d in draws]).mean()
    assert float(mean) == pytest.approx(float(q.square().sum()), abs=0.01)


def _detector() -> RegimeDetector:
    return RegimeDetector(RHO, ENTER, LEAVE, WARMUP, history=HISTORY, mixed_enter=MIXED_ENTER, mixed_leave=MIXED_LEAVE)


def test_detector_stays_iid_on_iid_batches_and_switches_on_single_class_batches():
    gen = torch.Generator().manual_seed(0)
    det = _detector()
    flags = [det.update(_iid_preds(gen)) for _ in range(200)]
    assert not any(flags) and int(det.switches) == 0
    det = _detector()
    flags = [det.update(_correlated_preds(gen, (t // 5) % 10)) for t in range(200)]
    assert not any(flags[:WARMUP - 1])  # never during the warm-up
    assert all(flags[WARMUP - 1:]) and int(det.switches) == 1


def test_a_domain_that_favours_one_class_is_not_label_correlation():
    """i.i.d. predictions that put 55 % on one class (a domain the model is biased on): their pair agreement
    (0.31) is over ``mixed_enter``, but each batch agrees with the recent ones as much as with itself, so the
    excess score stays near 0 and one domain at a time never switches; read as mixed domains (the plain
    agreement) the same stream does."""
    q = torch.tensor([0.05] * 3 + [0.55] + [0.05] * 6)
    assert float(q.square().sum()) > MIXED_ENTER
    gen = torch.Generator().manual_seed(0)
    for mixed in (False, True):
        det = _detector()
        flags = [det.update(torch.multinomial(q, 64, replacement=True, generator=gen), mixed) for _ in range(200)]
        assert any(flags) == mixed
    det = _detector()
    for _ in range(200):
        det.update(torch.multinomial(q, 64, replacement=True, generator=gen))
    assert abs(float(det.score)) < ENTER / 2


# Stated switching delays with the defaults (rho 0.2, enter 0.07, leave 0.03, history 0.15), on the constructed
# stream below (one class predicted right 60 % of the time, the class changing every 6 batches): measured over
# seeds 0-4, the switch to correlated comes 0-1 batches after the change and the switch back 8-10 batches after.
SWITCH_TO_CORRELATED, SWITCH_TO_IID = 4, 16


def test_a_switch_mid_stream_is_followed_within_the_stated_number_of_batches():
    gen = torch.Generator().manual_seed(1)
    det = _detector()
    stream = [("iid", None)] * 80 + [("corr", t // 6 % 10) for t in range(80)] + [("iid", None)] * 80
    flags = []
    for kind, cls in stream:
        pred = _iid_preds(gen) if kind == "iid" else _correlated_preds(gen, cls, hit=0.6)
        flags.append(det.update(pred))
    first_corr = flags.index(True)
    assert 80 <= first_corr < 80 + SWITCH_TO_CORRELATED
    back = flags.index(False, first_corr)
    assert 160 <= back < 160 + SWITCH_TO_IID
    assert not any(flags[back:]) and int(det.switches) == 2


@pytest.mark.parametrize("bad,name", [({"enter": 0.2, "leave": 0.3}, "leave=0.3"),
                                      ({"mixed_enter": 0.2, "mixed_leave": 0.3}, "mixed_leave=0.3")])
def test_detector_rejects_leave_above_enter(bad, name):
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 10))
    with pytest.raises(tta.errors.TTAError, match=name):
        tta.adapt(tiny, "regime-aware", **bad)


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
def test_a_batch_above_grad_images_is_predicted_whole_and_eta_steps_on_spaced_images(resnet20, cifar10_test):
    """Batches of 96 with ``grad_images`` 32: the prediction is the i.i.d. branch's forward of all 96 images with
    the parameters before the step, and the step is ETA's on images 0, 3, 6, ... (an ETA adapter fed those)."""
    torch.manual_seed(0)
    ours = tta.adapt(resnet20, "regime-aware", dataset="cifar10", grad_images=32)
    eta = tta.adapt(resnet20, "eta", dataset="cifar10")
    for x in _batches(cifar10_test, correlated=False, n_batches=6, size=96):
        with torch.no_grad():
            want = eta.model(x).softmax(1)
        eta(x[::3])
        torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=1e-4)
    assert eta.memory.state.num_selected > 0  # ETA stepped (some images passed its filters)
    assert ours.memory.state.num_selected == eta.memory.state.num_selected
    for a, b in zip(norm_parameters(ours.model.iid), norm_parameters(eta.model)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.realdata
def test_the_step_graph_holds_at_most_grad_images_images(resnet20, cifar10_test):
    """What autograd saves for the backward (the step's memory) has at most ``grad_images`` rows whatever the
    batch; with the cap above the batch it holds the whole batch (the check would see it)."""
    x = _batches(cifar10_test, correlated=False, n_batches=1, size=96)[0]

    def largest_saved(grad_images: int) -> int:
        adapter = tta.adapt(resnet20, "regime-aware", dataset="cifar10", grad_images=grad_images)
        weights = {p.data_ptr() for p in adapter.model.parameters()}
        rows: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:  # activations: 4-dim, not a conv weight
            rows.append(t.shape[0] if t.dim() == 4 and t.data_ptr() not in weights else 0)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            adapter(x)
        return max(rows)

    assert largest_saved(24) == 24
    assert largest_saved(128) == 96


@pytest.mark.realdata
def test_single_class_batches_switch_to_lame_over_unmix_tns_exactly(resnet20, cifar10_test):
    """With the whole batch seen in the i.i.d. regime, the correlated regime's output on batches of one domain is
    LAME over UnMix-TNS's (K = 16) exactly (the default ``detector_images`` sees a quarter of a batch: below)."""
    torch.manual_seed(0)
    ours = tta.adapt(resnet20, "regime-aware", dataset="cifar10", detector_images=32)
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
        assert not ours.memory.mixing.mixed  # clean images: one domain, the K = 16 branch
    assert switched_at is not None and switched_at <= WARMUP + SWITCH_TO_CORRELATED
    assert int(ours.memory.detector.switches) == 1


@pytest.mark.parametrize("scale", [4.0, 0.5])
def test_component_rate_scale_counts_each_batch_as_that_share_of_its_size(scale):
    """UnMix-TNS's update with ``rate_scale`` s, against its formula written out: lam = 1 - (1 - m)^(s B / B_max),
    then mu_k += lam / B * sum_b p_bk (m_b - mu_k) (and var_k alike). s = 4 on 16 images is what the i.i.d.
    regime does (the quarter of a batch of 64 moves the components as the whole batch would); s < 1 the other
    way."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(6)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    layer = UnMixTNS2d(bn, 4, torch.randn(4, 6), alpha=0.5, tau=0.07, batch_size=None, batch_size_max=64)
    layer.rate_scale = scale
    x = torch.randn(16, 6, 5, 5) * 1.5 + 0.3
    mu0, var0 = layer.mu_k.clone(), layer.var_k.clone()
    m, v = x.mean((2, 3)), x.var((2, 3), unbiased=False)
    p = torch.softmax(torch.nn.functional.normalize(m, dim=1) @ torch.nn.functional.normalize(mu0, dim=1).T / 0.07, 1)
    lam = 1 - (1 - bn.momentum) ** (scale * 16 / 64)
    assert lam == pytest.approx(unmix_momentum(bn.momentum, scale * 16, 64))
    with torch.no_grad():
        layer(x)
    expect_mu = mu0 + lam / 16 * (p.T @ m - p.sum(0)[:, None] * mu0)
    expect_var = var0 + lam / 16 * (p.T @ v - p.sum(0)[:, None] * var0)
    torch.testing.assert_close(layer.mu_k, expect_mu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.var_k, expect_var, atol=1e-5, rtol=1e-5)


@pytest.mark.realdata
def test_the_iid_regime_moves_the_components_with_a_quarter_of_the_batch(resnet20, cifar10_test):
    """In the i.i.d. regime the correlated branch sees ``detector_images`` evenly spaced images (every 2nd of
    32 here), counted as the whole batch: its components equal UnMix-TNS's fed those images with s = 2."""
    torch.manual_seed(0)
    ours = tta.adapt(resnet20, "regime-aware", dataset="cifar10", detector_images=16)
    torch.manual_seed(0)
    ref = tta.adapt(resnet20, "unmix-tns", dataset="cifar10", K=16)
    for layer in ref.modules():
        if isinstance(layer, UnMixTNS2d):
            layer.rate_scale = 2.0
    for x in _batches(cifar10_test, correlated=False, n_batches=5):
        ours(x)
        with torch.no_grad():
            ref(x[::2])
    assert not bool(ours.memory.detector.correlated)
    got = [m.mu_k for m in ours.model.correlated.modules() if isinstance(m, UnMixTNS2d)]
    want = [m.mu_k for m in ref.modules() if isinstance(m, UnMixTNS2d)]
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_mixing_detector_averages_and_thresholds():
    det = MixingDetector(rho=0.5, threshold=0.6)
    assert not det.mixed  # nothing seen yet
    det.update(None)  # a forward without a spread (one image) changes nothing
    assert int(det.seen) == 0
    det.update(torch.tensor(0.9))
    assert det.mixed and float(det.score) == pytest.approx(0.9)
    det.update(torch.tensor(0.2))  # 0.9 + 0.5 * (0.2 - 0.9) = 0.55
    assert float(det.score) == pytest.approx(0.55) and not det.mixed


def _styles(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Every image in one of three unlike styles: heavy noise, a 3x3 blur, low contrast."""
    noisy = (x + 0.25 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    faded = 0.5 + 0.3 * (x - 0.5)
    pick = torch.arange(x.shape[0]) % 3
    return torch.where((pick == 0)[:, None, None, None], noisy, torch.where((pick == 1)[:, None, None, None], blurred, faded))


@pytest.mark.realdata
def test_batches_that_mix_styles_are_told_from_batches_of_one_style(resnet20, cifar10_test):
    """The style spread of the shared ResNet-20's first stage: batches of one style (clean, or all noisy)
    stay under the threshold, batches mixing three styles go over it; only the latter run the mixed branch."""
    gen = torch.Generator().manual_seed(0)
    clean = _batches(cifar10_test, correlated=False, n_batches=12)
    noisy = [(x + 0.25 * torch.randn(x.shape, generator=gen)).clamp(0, 1) for x in clean]
    mixed = [_styles(x, gen) for x in clean]
    verdicts = {}
    for name, batches in (("clean", clean), ("noisy", noisy), ("mixed", mixed)):
        torch.manual_seed(0)
        ours = tta.adapt(resnet20, "regime-aware", dataset="cifar10", start="correlated", warmup=10_000)
        initial = [m.mu_k.clone() for m in ours.model.mixed.modules() if isinstance(m, UnMixTNS2d)]
        for x in batches:
            ours(x)
        verdicts[name] = ours.memory.mixing.mixed
        now = [m.mu_k for m in ours.model.mixed.modules() if isinstance(m, UnMixTNS2d)]
        assert all(torch.equal(a, b) for a, b in zip(initial, now)) == (name != "mixed")
    assert verdicts == {"clean": False, "noisy": False, "mixed": True}


@pytest.mark.realdata
@pytest.mark.parametrize("init", ["stratified", "random"])
def test_batches_that_mix_styles_get_lame_over_unmix_tns_with_mixed_k_exactly(resnet20, cifar10_test, init):
    """From the batch after the mixing detector fires, the correlated regime's output is LAME over UnMix-TNS with
    ``mixed_K`` components (same component seed), fed the batches from there on: UnMix-TNS's own setting for
    mixed domains, chosen from the stream instead of the setting's name."""
    gen = torch.Generator().manual_seed(0)
    batches = [_styles(x, gen) for x in _batches(cifar10_test, correlated=True, n_batches=8)]
    ours = tta.adapt(resnet20, "regime-aware", dataset="cifar10", start="correlated", warmup=10_000,
                     stats_options={"K": 16, "seed": 3}, **({} if init == "stratified" else {"mixed_init": init}))
    ref = tta.adapt(resnet20, "lame", dataset="cifar10", stats="unmix-tns", stats_options={"K": 128, "seed": 3})
    if init == "stratified":  # the default: give the reference the policy's stratified draw for that seed
        drawn = copy.deepcopy(resnet20)
        get_stats("unmix-tns", "test").swap(drawn, {**ref.hparams()["stats_options"], "init": "stratified"})
        layers = [m for m in ref.model.modules() if isinstance(m, UnMixTNS2d)]
        for mine, theirs in zip(layers, [m for m in drawn.modules() if isinstance(m, UnMixTNS2d)], strict=True):
            mine.mu_k.copy_(theirs.mu_k)
            mine.var_k.copy_(theirs.var_k)
    assert ours.hparams()["mixed_K"] == 128
    fed = 0
    for x in batches:
        mixed_now = ours.memory.mixing.mixed
        out = ours(x)
        if mixed_now:
            torch.testing.assert_close(out, ref(x))
            fed += 1
    assert fed >= len(batches) - 3
