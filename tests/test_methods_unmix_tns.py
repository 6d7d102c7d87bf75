"""UnMix-TNS against a direct re-computation of the official layer (devavratTomar/unmixtns), written here with (B, K, C) tensors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tta
from tta.methods.unmix_tns import unmix_momentum
from test_methods_stats import apply_bn, batches, reference, tiny_net


def initial_components(net: nn.Module, K: int, seed: int, alpha: float = 0.5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Spec §1.2: one generator, noise (K, C) per BatchNorm2d in module order."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            noise = torch.randn(K, m.num_features, generator=gen)
            std = m.running_var.sqrt()
            out.append((m.running_mean + math.sqrt(alpha * K / (K - 1)) * std * noise, (1 - alpha) * m.running_var.expand(K, -1)))
    return out


def naive_unmix(h, mu_k, var_k, lam, tau=0.07):
    """Spec §1.3-1.4 literally: materialized (B, K, C) mixtures, then the update."""
    B, C = h.shape[:2]
    m = h.mean((2, 3))
    v = h.var((2, 3), unbiased=False)
    sim = (m @ mu_k.T) / (m.norm(dim=1, keepdim=True) * mu_k.norm(dim=1)[None])
    p = torch.softmax(sim / tau, dim=1)
    mh = (1 - p)[..., None] * mu_k[None] + p[..., None] * m[:, None]
    vh = (1 - p)[..., None] * var_k[None] + p[..., None] * v[:, None]
    mean = mh.mean(1)
    var = vh.mean(1) + (mh**2).mean(1) - mean**2
    new_mu = mu_k + lam * (p[..., None] * (m[:, None] - mu_k[None])).mean(0)
    new_var = var_k + lam * (p[..., None] * (v[:, None] - var_k[None])).mean(0)
    return mean, var, new_mu, new_var


def test_lambda_batch_size_correction():
    assert unmix_momentum(0.1, 1, 64) == pytest.approx(0.0016449, abs=5e-8)
    assert unmix_momentum(0.1, 8, 64) == pytest.approx(0.01308, abs=1e-5)
    assert unmix_momentum(0.1, 1, 16) == pytest.approx(0.00656, abs=1e-5)
    assert unmix_momentum(0.1, 64, 64) == pytest.approx(0.1, abs=1e-12)


def test_components_are_initialized_from_the_seeded_noise():
    net = tiny_net()
    a = tta.adapt(net, "unmix-tns", K=5, seed=3)
    (mu, var), = initial_components(net, 5, 3)
    assert torch.allclose(a.model[1].mu_k, mu, atol=1e-6) and torch.allclose(a.model[1].var_k, var, atol=1e-6)
    b = tta.adapt(net, "unmix-tns", K=5, seed=4)
    assert not torch.allclose(a.model[1].mu_k, b.model[1].mu_k)


def test_pooled_initial_components_recover_the_source_statistics():
    bn = nn.BatchNorm2d(3).eval()
    bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    bn.running_var.copy_(torch.tensor([0.25, 1.0, 4.0]))
    K = 20000
    a = tta.adapt(nn.Sequential(bn), "unmix-tns", K=K)
    mu, var = a.model[0].mu_k, a.model[0].var_k
    pooled_var = var.mean(0) + mu.var(0, unbiased=False)  # equal-weight mixture
    # the mean of K draws with std sqrt(alpha K/(K-1)) sigma: within 5 standard errors
    assert ((mu.mean(0) - bn.running_mean).abs() < 5 * math.sqrt(0.5) * bn.running_var.sqrt() / math.sqrt(K)).all()
    assert torch.allclose(pooled_var, bn.running_var, rtol=0.05)


def test_k_equal_one_is_instance_norm_with_the_source_affine():
    net = tiny_net()

    def inorm(bn, h):
        if isinstance(bn, nn.BatchNorm1d):  # BatchNorm1d stays frozen at the source statistics
            return apply_bn(bn, h, bn.running_mean, bn.running_var)
        return F.instance_norm(h, weight=bn.weight, bias=bn.bias, eps=bn.eps)

    a = tta.adapt(net, "unmix-tns", K=1)
    ref = reference(net, inorm)
    with torch.no_grad():
        for x in batches(2):
            assert torch.allclose(a(x), ref(x), atol=1e-5)


@pytest.mark.parametrize("B", [6, 1])
def test_forward_and_update_match_the_direct_recomputation(B):
    net = tiny_net()
    K = 4
    a = tta.adapt(net, "unmix-tns", K=K, seed=7)
    (mu, var), = initial_components(net, K, 7)
    lam = unmix_momentum(0.1, B, 64)
    state = {"mu": mu, "var": var}

    def fn(bn, h):
        if isinstance(bn, nn.BatchNorm1d):
            return apply_bn(bn, h, bn.running_mean, bn.running_var)
        mean, v, state["mu"], state["var"] = naive_unmix(h, state["mu"], state["var"], lam)
        shape = (B, -1, 1, 1)
        return (h - mean.view(shape)) / torch.sqrt(v.view(shape) + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)

    ref = reference(net, fn)
    with torch.no_grad():
        for x in batches(3, b=B):  # the second forward sees the components the first one updated
            assert torch.allclose(a(x), ref(x), atol=1e-5)
            assert torch.allclose(a.model[1].mu_k, state["mu"], atol=1e-5)
            assert torch.allclose(a.model[1].var_k, state["var"], atol=1e-5)


def test_one_hot_assignment_moves_only_the_chosen_component():
    net = tiny_net()
    a = tta.adapt(net, "unmix-tns", K=6, tau=1e-4, seed=1)
    x = batches(1, b=1)[0]
    layer = a.model[1]
    mu0 = layer.mu_k.clone()
    with torch.no_grad():
        h = net[0](x)
        m = h.mean((2, 3))[0]
        a(x)
    k = int(torch.argmax(F.normalize(m, dim=0) @ F.normalize(mu0, dim=1).T))
    lam = 1 - 0.9 ** (1 / 64)
    expected = mu0.clone()
    expected[k] += lam * (m - mu0[k])
    assert torch.allclose(layer.mu_k, expected, atol=1e-6)


def test_batch_size_option_pins_lambda():
    net = tiny_net()
    a = tta.adapt(net, "unmix-tns", K=1, batch_size=64)  # K = 1: p = 1, so the update is lam * (m - mu)
    x = batches(1, b=2)[0]
    mu0 = a.model[1].mu_k.clone()
    with torch.no_grad():
        m = net[0](x).mean((2, 3)).mean(0)
        a(x)
    assert torch.allclose(a.model[1].mu_k[0], mu0[0] + 0.1 * (m - mu0[0]), atol=1e-6)


def test_reset_restores_the_initial_noise_and_state_dict_round_trips():
    net = tiny_net()
    a = tta.adapt(net, "unmix-tns", K=8, seed=5)
    init = a.model[1].mu_k.clone()
    xs = batches(3)
    with torch.no_grad():
        first = a(xs[0])
        a(xs[1])
        assert not torch.equal(a.model[1].mu_k, init)
        a.reset()
        assert torch.equal(a.model[1].mu_k, init)
        assert torch.equal(a(xs[0]), first)
        b = tta.adapt(net, "unmix-tns", K=8, seed=99)
        b.load_state_dict(a.state_dict())
        assert torch.equal(a(xs[2]), b(xs[2]))


def test_tent_composes_with_unmix_tns():
    net = tiny_net()
    xs = batches(2)
    plain = tta.adapt(net, "unmix-tns", K=4, seed=2)
    tent = tta.adapt(net, "tent", stats="unmix-tns", stats_options={"K": 4, "seed": 2})
    with torch.no_grad():
        expected = plain(xs[0])
    assert torch.allclose(tent(xs[0]), expected, atol=1e-5)  # pre-update logits, same statistics
    assert torch.allclose(tent.model[1].mu_k, plain.model[1].mu_k, atol=1e-6)  # updates carry no gradient
    assert not torch.equal(tent.model[1].weight, plain.model[1].weight)  # gamma took a step
    assert tent.hparams()["stats"] == "unmix-tns" and tent.hparams()["stats_options"]["K"] == 4


def test_defaults_per_dataset_and_shift():
    defaults = tta.methods.method_defaults
    assert defaults("unmix-tns", "cifar10", "mixed")["K"] == 128
    assert defaults("unmix-tns", "cifar10", "mixed-dirichlet")["K"] == 128
    assert defaults("unmix-tns", "cifar10", "continual")["K"] == 16
    assert defaults("unmix-tns", "imagenet")["batch_size_max"] == 16
    assert defaults("unmix-tns", "cifar100", "mixed") == {"K": 128, "batch_size": None, "batch_size_max": 64,
                                                          "alpha": 0.5, "tau": 0.07, "seed": None}
    assert tta.adapt(tiny_net(), "unmix-tns", dataset="imagenet", shift="mixed").hparams()["K"] == 128
