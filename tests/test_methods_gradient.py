"""TENT and alpha-bn-mcc against naive re-implementations written here."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tta
from tta.catalog import methods as list_methods
from tta.errors import InputError, TTAError
from tta.errors import UnknownNameError
from tta.methods import get_method
from tta.methods.alpha_bn_mcc import class_confusion_loss
from test_methods_stats import batches, tiny_net


def naive_tent(net: nn.Module, xs, make_opt):
    """Official TENT: train-mode BN without running stats, entropy, one step, pre-update logits."""
    model = copy.deepcopy(net).train()
    params = []
    for m in model.modules():
        m.requires_grad_(False)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.track_running_stats, m.running_mean, m.running_var = False, None, None
            m.requires_grad_(True)
            params += [m.weight, m.bias]
    opt = make_opt(params)
    outs = []
    for x in xs:
        logits = model(x)
        loss = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        outs.append(logits.detach())
    return outs


def test_tent_matches_official_tent_step_by_step():
    net, xs = tiny_net(), batches(3)
    a = tta.adapt(net, "tent")
    expected = naive_tent(net, xs, lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.9, 0.999)))
    for x, e in zip(xs, expected):
        assert torch.allclose(a(x), e, atol=1e-5)
    assert {s["step"].item() for s in a.optimizer.state.values()} == {3.0}  # exactly one step per batch


def test_tent_sgd_option_and_imagenet_defaults():
    net, xs = tiny_net(), batches(3)
    opts = tta.methods.method_defaults("tent", "imagenet")
    assert opts["optimizer"] == "sgd" and opts["lr"] == 2.5e-4 and opts["nesterov"] and opts["momentum"] == 0.9
    a = tta.adapt(net, "tent", dataset="imagenet", lr=0.05)
    assert a.hparams() == {**opts, "lr": 0.05}
    expected = naive_tent(net, xs, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True))
    for x, e in zip(xs, expected):
        assert torch.allclose(a(x), e, atol=1e-5)


def test_tent_returns_pre_update_logits_and_counts_one_step_per_batch(monkeypatch):
    net, xs = tiny_net(), batches(2)
    a = tta.adapt(net, "tent")
    calls = []
    step = a.optimizer.step
    monkeypatch.setattr(a.optimizer, "step", lambda *args, **kw: (calls.append(1), step(*args, **kw))[1])
    with torch.no_grad():
        before = copy.deepcopy(net).train()(xs[0])  # batch statistics, source affine
    assert torch.allclose(a(xs[0]), before, atol=1e-5)
    a(xs[1])
    assert len(calls) == 2


def test_tent_reset_restores_parameters_and_optimizer_moments():
    net, xs = tiny_net(), batches(3)
    a = tta.adapt(net, "tent")
    first = [a(x) for x in xs]
    a.reset()
    assert not a.optimizer.state  # fresh moments
    again = [a(x) for x in xs]
    assert all(torch.equal(u, v) for u, v in zip(first, again))


def test_tent_adapts_groupnorm_affine_on_a_model_without_batchnorm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    xs = batches(3)
    a = tta.adapt(net, "tent")
    expected = naive_tent(net, xs, lambda p: torch.optim.Adam(p, lr=1e-3))
    for x, e in zip(xs, expected):
        assert torch.allclose(a(x), e, atol=1e-5)
    assert a.hparams()["stats"] == "none"
    with pytest.raises(TTAError, match="no BatchNorm"):
        tta.adapt(net, "tbn")
    with pytest.raises(TTAError, match="no BatchNorm"):
        tta.adapt(net, "tent", stats="unmix-tns")


def test_norm_is_a_deprecated_alias_of_stats_on_gradient_methods():
    net, xs = tiny_net(), batches(2)
    with pytest.warns(DeprecationWarning) as caught:
        old = tta.adapt(net, "tent", norm="unmix-tns", norm_options={"K": 4, "seed": 0})
    said = sorted(str(w.message) for w in caught if issubclass(w.category, DeprecationWarning))
    assert len(said) == 2 and "use stats=" in said[0] and "use stats_options=" in said[1], said
    new = tta.adapt(net, "tent", stats="unmix-tns", stats_options={"K": 4, "seed": 0})
    assert old.hparams() == new.hparams() and old.hparams()["stats_options"]["K"] == 4
    assert all(torch.equal(old(x), new(x)) for x in xs)
    with pytest.raises(InputError, match="both norm= and stats="):
        tta.adapt(net, "tent", norm="tbn", stats="tbn")


def test_tent_over_unmix_tns_takes_the_composed_defaults_and_the_protocol_lr():
    """K = 128 on mixed shifts and B_max = 16 on ImageNet come from unmix-tns's own declaration;
    the learning rate from the UnMix-TNS scripts (Adam 1e-5 CIFAR, SGD Nesterov 2.5e-6 ImageNet)."""
    net = tiny_net()
    a = tta.adapt(net, "tent", stats="unmix-tns", dataset="cifar10", shift="mixed")
    hp = a.hparams()
    assert hp["stats_options"]["K"] == 128 and hp["stats_options"]["batch_size_max"] == 64
    assert (hp["optimizer"], hp["lr"]) == ("adam", 1e-5)
    assert a.optimizer.param_groups[0]["lr"] == 1e-5
    assert a.model[1].K == 128  # the layer really has 128 components
    b = tta.adapt(net, "tent", stats="unmix-tns", dataset="imagenet", shift="continual")
    hp = b.hparams()
    assert hp["stats_options"]["K"] == 16 and hp["stats_options"]["batch_size_max"] == 16
    assert (hp["optimizer"], hp["lr"], hp["momentum"], hp["nesterov"]) == ("sgd", 2.5e-6, 0.9, True)
    group = b.optimizer.param_groups[0]
    assert (group["lr"], group["nesterov"]) == (2.5e-6, True)
    # an explicit choice wins over every rule; tent over tbn keeps TENT's own lr
    assert tta.adapt(net, "tent", stats="unmix-tns", dataset="cifar10", lr=1e-3).hparams()["lr"] == 1e-3
    assert tta.adapt(net, "tent", dataset="cifar10", shift="mixed").hparams()["lr"] == 1e-3


def test_class_confusion_loss_matches_a_loop_over_classes():
    torch.manual_seed(0)
    logits = torch.randn(6, 4) * 2
    T = 2.5
    p = torch.softmax(logits / T, 1)
    h = -(p * p.log()).sum(1)
    w = (1 + torch.exp(-h))
    w = 6 * w / w.sum()
    K = 4
    corr = [[sum(w[b] * p[b, i] * p[b, j] for b in range(6)) for j in range(K)] for i in range(K)]
    total = 0.0
    for i in range(K):
        row = sum(corr[i])
        total += sum(corr[i][j] / row for j in range(K) if j != i)
    assert class_confusion_loss(logits, T).item() == pytest.approx(float(total) / K, rel=1e-5)
    # confident one-hot predictions have no confusion
    assert class_confusion_loss(torch.eye(4) * 100, T).item() == pytest.approx(0.0, abs=1e-6)


def test_alpha_bn_mcc_uses_alpha_bn_statistics_and_is_honest_about_its_loss():
    net, xs = tiny_net(), batches(2)
    a = tta.adapt(net, "alpha-bn-mcc", stats_options={"source_weight": 1.0})
    with torch.no_grad():
        src = net(xs[0])
    assert torch.allclose(a(xs[0]), src, atol=1e-5)  # pre-update logits with source statistics
    assert not torch.equal(a.model[1].weight, net[1].weight)  # gamma took a step
    assert a.hparams()["stats"] == "alpha-bn" and a.hparams()["temperature"] == 2.5
    assert "not core" in get_method("alpha-bn-mcc").notes.lower()
    assert any(line.startswith("alpha-bn-mcc") for line in list_methods())


def test_core_is_withheld_with_an_error_that_names_the_alternatives():
    # the spec forbids guessing Core's loss; asking for it must not silently give a stand-in
    assert "core" not in tta.list_methods()
    with pytest.raises(UnknownNameError) as exc:
        tta.adapt(tiny_net(), "core")
    assert "could not be verified" in str(exc.value) and "alpha-bn-mcc" in str(exc.value)


def test_tent_finds_custom_norm_layers_by_name_and_nothing_else():
    class ScaleNorm2d(nn.Module):  # a custom norm: recognized by its class name
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1, 4, 1, 1))

        def forward(self, x):
            return self.gain * x / x.pow(2).mean((1, 2, 3), keepdim=True).add(1e-5).sqrt()

    class NormalizedInput(nn.Module):  # not a norm layer, despite the word
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.scale

    net = nn.Sequential(NormalizedInput(), nn.Conv2d(3, 4, 3), ScaleNorm2d(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    a = tta.adapt(net, "tent", lr=0.1)
    a(batches(1)[0])
    assert [id(p) for g in a.optimizer.param_groups for p in g["params"]] == [id(a.model[2].gain)]
    assert not torch.equal(a.model[2].gain, net[2].gain) and torch.equal(a.model[0].scale, net[0].scale)


def test_momentum_decay_hbs_loss_matches_a_loop_and_starts_from_momentum_decay():
    net, xs = tiny_net(), batches(2)
    a = tta.adapt(net, "momentum-decay-hbs", entropy_weight=0.5)
    plain = tta.adapt(net, "momentum-decay")
    with torch.no_grad():
        expected = plain(xs[0])
    assert torch.allclose(a(xs[0]), expected, atol=1e-5)  # pre-update logits, same statistics
    with torch.no_grad():
        for layer, src in zip(a.objective.layers, (net[1], net[6])):
            layer.weight.copy_(src.weight + 0.1)
            layer.bias.copy_(src.bias - 0.2)
    total = 0.0
    for layer, src in zip(a.objective.layers, (net[1], net[6])):
        C, eps = layer.num_features, layer.eps
        d = [abs(float(src.running_mean[c] / (src.running_var[c] + eps) ** 0.5
                       - layer.running_mean[c] / (layer.running_var[c] + eps) ** 0.5)) for c in range(C)]
        s = sum(1 / (1 + dc) for dc in d)
        for c in range(C):
            alpha = C * (1 / (1 + d[c])) / s
            dw, db = float(layer.weight.data[c] - src.weight.data[c]), float(layer.bias.data[c] - src.bias.data[c])
            total += (1 + alpha) * (abs(dw) + abs(db))
    assert a.objective.consistency().item() == pytest.approx(total, rel=1e-5)
    assert total == pytest.approx(0.3 * sum(2 * layer.num_features for layer in a.objective.layers), rel=1e-5)  # sum(1+alpha) = 2C
    assert a.hparams()["entropy_weight"] == 0.5
