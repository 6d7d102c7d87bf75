"""Math of the BatchNorm-statistics methods against independent computations written here.

Each reference replaces the BatchNorm layers of a copy of the network by a module that
computes the statistics with plain torch reductions, following the papers' formulas.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import tta
from tta.methods.adab2n import BalancedBatchNorm


def tiny_net(seed: int = 0) -> nn.Module:
    """Conv + BN2d + ReLU + pool + Linear + BN1d + Linear, with non-trivial source statistics."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3),
    )
    for bn in (net[1], net[6]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    return net.eval()


class Ref(nn.Module):
    def __init__(self, bn: nn.Module, fn) -> None:
        super().__init__()
        self.bn, self.fn = bn, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.bn, x)


def reference(net: nn.Module, fn) -> nn.Module:
    ref = copy.deepcopy(net)
    for i, m in enumerate(ref):
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            ref[i] = Ref(m, fn)
    return ref


def apply_bn(bn: nn.Module, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    xhat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps)
    return xhat * bn.weight.view(shape) + bn.bias.view(shape)


def bstats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = [0] + list(range(2, x.dim()))
    return x.mean(dims), x.var(dims, unbiased=False)


def batches(n: int = 3, b: int = 5, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # shifted batch by batch, yet inside [0, 1] as every adapter requires (tta.validate)
    return [torch.rand(b, 3, 8, 8, generator=g) ** (1 + i) for i in range(n)]


# -- tbn ---------------------------------------------------------------------------
def test_tbn_prior_zero_equals_train_mode_batchnorm_including_bn1d():
    net = tiny_net()
    x = batches(1)[0]
    with torch.no_grad():
        expected = copy.deepcopy(net).train()(x)
    assert torch.allclose(tta.adapt(net, "tbn")(x), expected, atol=1e-5)


def test_tbn_huge_prior_equals_source():
    net = tiny_net()
    x = batches(1)[0]
    with torch.no_grad():
        assert torch.allclose(tta.adapt(net, "tbn", prior=1e12)(x), net(x), atol=1e-5)


def test_tbn_prior_mixes_with_weight_n_over_n_plus_n():
    net = tiny_net()
    x = batches(1, b=4)[0]
    w = 8 / (8 + 4)

    def mixed(bn, h):
        mu, var = bstats(h)
        return apply_bn(bn, h, w * bn.running_mean + (1 - w) * mu, w * bn.running_var + (1 - w) * var)

    with torch.no_grad():
        assert torch.allclose(tta.adapt(net, "tbn", prior=8)(x), reference(net, mixed)(x), atol=1e-5)


# -- alpha-bn ------------------------------------------------------------------------
def test_alpha_bn_source_weight_one_is_source_and_zero_is_batch_statistics():
    net = tiny_net()
    x = batches(1)[0]
    with torch.no_grad():
        assert torch.allclose(tta.adapt(net, "alpha-bn", source_weight=1.0)(x), net(x), atol=1e-5)
        assert torch.allclose(tta.adapt(net, "alpha-bn", source_weight=0.0)(x), copy.deepcopy(net).train()(x), atol=1e-5)


def test_alpha_bn_is_a_stateless_fixed_mix():
    net = tiny_net()
    a = tta.adapt(net, "alpha-bn", source_weight=0.3)

    def mixed(bn, h):
        mu, var = bstats(h)
        return apply_bn(bn, h, 0.3 * bn.running_mean + 0.7 * mu, 0.3 * bn.running_var + 0.7 * var)

    ref = reference(net, mixed)
    with torch.no_grad():
        for x in batches(3):  # same answer whatever came before: no state
            assert torch.allclose(a(x), ref(x), atol=1e-5)


# -- EMA-style running statistics --------------------------------------------------------
def ema_reference(net: nn.Module, rate_for_step, unbiased: bool) -> nn.Module:
    """Update running stats with rate_for_step(k) (k = 0, 1, ...) then normalize with them."""
    state: dict[int, list] = {}

    def fn(bn, h):
        rm, rv, k = state.setdefault(id(bn), [bn.running_mean.clone(), bn.running_var.clone(), 0])
        mu, var = bstats(h)
        if unbiased:
            n = h.numel() // h.shape[1]
            var = var * n / (n - 1)
        r = rate_for_step(k)
        rm, rv = (1 - r) * rm + r * mu, (1 - r) * rv + r * var
        state[id(bn)] = [rm, rv, k + 1]
        return apply_bn(bn, h, rm, rv)

    return reference(net, fn)


def test_tbn_ema_one_pass_updates_like_train_mode_bn_then_normalizes_with_the_update():
    net = tiny_net()
    a = tta.adapt(net, "tbn-ema", momentum=0.2, passes=1)
    ref = ema_reference(net, lambda k: 0.2, unbiased=True)
    with torch.no_grad():
        for x in batches(3):
            assert torch.allclose(a(x), ref(x), atol=1e-5)


def two_pass_reference(net: nn.Module):
    """The reference EMABatchNorm written out: a train-mode pass through every layer (batch
    statistics normalize, each BN's running statistics move by its own momentum with the
    unbiased variance), its output discarded; then an eval-mode pass with the updated statistics."""
    layers = [copy.deepcopy(m) for m in net]
    running = {i: [m.running_mean.clone(), m.running_var.clone()] for i, m in enumerate(layers)
               if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))}

    def step(x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, m in enumerate(layers):  # pass 1: train mode
            if i in running:
                mu, var = bstats(h)
                n = h.numel() // h.shape[1]
                rm, rv = running[i]
                running[i] = [(1 - m.momentum) * rm + m.momentum * mu, (1 - m.momentum) * rv + m.momentum * var * n / (n - 1)]
                h = apply_bn(m, h, mu, var)
            else:
                h = m(h)
        h = x
        for i, m in enumerate(layers):  # pass 2: eval mode, updated statistics
            h = apply_bn(m, h, *running[i]) if i in running else m(h)
        return h

    return step


def test_tbn_ema_equals_the_reference_two_pass_computation_with_each_bns_own_momentum():
    net = tiny_net()
    net[6].momentum = 0.3  # each layer keeps its own rate
    a = tta.adapt(net, "tbn-ema")
    assert a.hparams()["passes"] == 2 and a.hparams()["momentum"] is None  # None: each BatchNorm keeps its own rate
    ref = two_pass_reference(net)
    literal = copy.deepcopy(net)  # the reference code itself: model.train(); model(x); model.eval(); model(x)
    one_pass = tta.adapt(net, "tbn-ema", passes=1)
    differs = False
    with torch.no_grad():
        for x in batches(4):
            out = a(x)
            assert torch.allclose(out, ref(x), atol=1e-5)
            literal.train()
            literal(x)
            literal.eval()
            assert torch.allclose(out, literal(x), atol=1e-5)
            differs |= not torch.allclose(out, one_pass(x), atol=1e-4)
    assert differs  # the one-pass variant is a different computation
    a.reset()
    assert torch.equal(a.model[1].running_mean, net[1].running_mean)


def test_momentum_decay_follows_eta0_exp_minus_k():
    net = tiny_net()
    a = tta.adapt(net, "momentum-decay", eta0=0.5, decay=1.0)
    ref = ema_reference(net, lambda k: 0.5 * math.exp(-k), unbiased=True)
    with torch.no_grad():
        for x in batches(4):
            assert torch.allclose(a(x), ref(x), atol=1e-5)


def test_momentum_decay_without_decay_is_tbn_ema():
    net = tiny_net()
    a, b = tta.adapt(net, "momentum-decay", eta0=0.3, decay=0.0), tta.adapt(net, "tbn-ema", momentum=0.3, passes=1)
    with torch.no_grad():
        for x in batches(3):
            assert torch.allclose(a(x), b(x), atol=1e-6)


# -- adab2n ------------------------------------------------------------------------
def test_adab2n_kappa_one_is_a_plain_ema_with_the_bn_momentum():
    net = tiny_net()
    a = tta.adapt(net, "adab2n", kappa=1.0)
    ref = ema_reference(net, lambda k: 0.1, unbiased=False)  # official AdaB2N: biased batch variance
    with torch.no_grad():
        for x in batches(3):
            assert torch.allclose(a(x), ref(x), atol=1e-5)


def test_adab2n_kappa_zero_is_the_cumulative_average_of_batch_statistics():
    net = tiny_net()
    a = tta.adapt(net, "adab2n", kappa=0.0)
    xs = batches(4)
    with torch.no_grad():
        for x in xs:
            a(x)
        feats = [net[0](x) for x in xs]
    means = torch.stack([bstats(f)[0] for f in feats])
    vars_ = torch.stack([bstats(f)[1] for f in feats])
    layer = a.model[1]
    assert torch.allclose(layer.running_mean, means.mean(0), atol=1e-5)  # eta_1 = 1 forgets the source
    assert torch.allclose(layer.running_var, vars_.mean(0), atol=1e-5)


@pytest.mark.parametrize("kappa", [0.1, 0.4, 0.7])
def test_adab2n_eta_recursion_matches_its_closed_form_and_fixed_point(kappa):
    m, c = 0.1, 0.9**kappa
    layer = BalancedBatchNorm(nn.BatchNorm2d(2), kappa=kappa, momentum=None, normalize="running", domain_prior=1.0)
    x = torch.randn(3, 2, 4, 4)
    etas = []
    with torch.no_grad():
        for _ in range(60):
            layer(x)
            etas.append(layer.eta.item())
    # 1/eta_t = c/eta_{t-1} + 1  =>  1/eta_t = c^(t-1)/m^kappa + (1 - c^(t-1))/(1 - c)
    closed = [1.0 / (c ** (t - 1) / m**kappa + (1 - c ** (t - 1)) / (1 - c)) for t in range(1, 61)]
    assert etas == pytest.approx(closed, rel=1e-4)
    assert etas[0] == pytest.approx(m**kappa, rel=1e-6)
    assert etas[-1] > 1 - c and closed[-1] - (1 - c) < (c**59) * (m**kappa)  # decreasing to 1 - (1-m)^kappa
    if kappa == 0.4:  # the values the spec lists: 0.398, 0.293, 0.234, ... -> 0.0413
        assert etas[:3] == pytest.approx([0.398, 0.293, 0.234], abs=1e-3)
        assert 1 - c == pytest.approx(0.0413, abs=1e-4)


def test_adab2n_batch_normalization_variant_uses_batch_statistics():
    net = tiny_net()
    x = batches(1)[0]
    with torch.no_grad():
        out = tta.adapt(net, "adab2n", normalize="batch")(x)
        assert torch.allclose(out, copy.deepcopy(net).train()(x), atol=1e-5)


def test_adab2n_domain_weighting_matches_a_per_sample_loop():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    x = torch.rand(7, 3, 6, 6)
    ids = torch.tensor([0, 0, 0, 0, 0, 2, 2])  # domain 1 absent, domain 0 floods the batch
    a = tta.adapt(net, "adab2n", normalize="batch", domain_prior=1.0)
    with torch.no_grad():
        out = a(x, domain_ids=ids)
        h = net[0](x)
    counts = {d: int((ids == d).sum()) for d in range(3)}
    conc = {d: 1.0 + counts[d] for d in range(3)}
    total = sum(conc.values())
    w = [conc[int(d)] / total / counts[int(d)] for d in ids]
    s = sum(w)
    w = [wi / s for wi in w]
    mean = sum(w[i] * h[i].mean((1, 2)) for i in range(7))
    var = sum(w[i] * ((h[i] - mean.view(-1, 1, 1)) ** 2).mean((1, 2)) for i in range(7))
    assert torch.allclose(out, apply_bn(net[1], h, mean, var), atol=1e-5)
    # one domain only: the weighting reduces to plain batch statistics
    b = tta.adapt(net, "adab2n", normalize="batch")
    with torch.no_grad():
        assert torch.allclose(b(x, domain_ids=torch.zeros(7, dtype=torch.long)), apply_bn(net[1], h, *bstats(h)), atol=1e-5)


@pytest.mark.parametrize("shape,dims,channels_last", [
    ((6, 5, 7, 4), [0, 2, 3], True), ((6, 5, 7, 4), [0, 2, 3], False), ((6, 5, 7, 4), [2, 3], True),
    ((9, 5), [0], False), ((3, 4, 5, 6, 2), [0, 2, 3, 4], False),
])
def test_moments_values_and_gradients_equal_var_mean(shape, dims, channels_last):
    """The sum-based statistics behind every differentiable BatchNorm-statistics path give var_mean's
    values and, through the closed-form backward, autograd's gradients of var_mean (float64)."""
    from tta.methods._moments import moments
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 2)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w_mean, w_var = torch.randn(2, *[s for i, s in enumerate(shape) if i not in dims], generator=g, dtype=torch.float64)
    grads = []
    for fn in (lambda t: moments(t, dims), lambda t: torch.var_mean(t, dim=dims, correction=0)[::-1]):
        xr = x.clone().requires_grad_()
        mean, var = fn(xr)
        ((mean * w_mean).sum() + (var * w_var).sum()).backward()
        grads.append((mean.detach(), var.detach(), xr.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_batch_stats_unbiased_uses_pytorchs_correction():
    from tta.methods._moments import batch_stats
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    mean, var = batch_stats(x, unbiased=True)
    want_var, want_mean = torch.var_mean(x, dim=[0, 2, 3], correction=1)
    torch.testing.assert_close(mean, want_mean)
    torch.testing.assert_close(var, want_var)


@pytest.mark.parametrize("shape,channels_last", [((12, 5, 7, 4), True), ((12, 5, 7, 4), False), ((12, 5), False)])
def test_grouped_statistics_equal_one_train_mode_batchnorm_call_per_group(shape, channels_last):
    """CoTTA's views in one forward: each group of samples normalized as its own train-mode BatchNorm call."""
    from tta.methods._moments import grouped_batch_stats, normalize_grouped
    g = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5, torch.randn(shape[1], generator=g, dtype=torch.float64)
    mean, var = grouped_batch_stats(x, 3)
    assert mean.shape == var.shape == (3, shape[1])
    got = normalize_grouped(x, mean, var, weight, bias, 1e-5)
    want = torch.cat([torch.nn.functional.batch_norm(part, None, None, weight, bias, True, 0.0, 1e-5)
                      for part in x.split(4)])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="do not split into 5 equal groups"):
        grouped_batch_stats(x, 5)


@pytest.mark.parametrize("prior", [0.0, 16.0])
def test_prior_batchnorm_grouped_forward_equals_one_call_per_group(prior):
    """tbn's layer under CoTTA's grouped views: the source prior weighs each group by its own size."""
    from tta.methods.tbn import PriorBatchNorm
    bn = tiny_net()[1]
    layer = PriorBatchNorm(bn, prior).double()
    x = torch.randn(12, 4, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        got = layer.forward_grouped(x, 3)
        want = torch.cat([layer(part) for part in x.split(4)])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
