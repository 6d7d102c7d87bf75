"""tta.adapt: the wrapper contract, source and tbn, on synthetic and real data."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import tta
from tta.errors import InputError, TTAError, UnknownNameError

from conftest import to_tensor


def _tiny_bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    bn = net[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    return net.eval()


def test_source_is_the_model_and_leaves_the_callers_model_alone():
    net = _tiny_bn_net()
    before = copy.deepcopy(net.state_dict())
    adapted = tta.adapt(net, "source")
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(adapted(x), net(x), atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert isinstance(net[1], nn.BatchNorm2d)


def test_tbn_equals_train_mode_bn_on_a_closed_form():
    net = _tiny_bn_net()
    x = torch.rand(6, 3, 8, 8)
    feats = net[0](x)
    mean = feats.mean((0, 2, 3), keepdim=True)
    var = feats.var((0, 2, 3), unbiased=False, keepdim=True)
    bn = net[1]
    y = (feats - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    expected = net[5](net[4](net[3](net[2](y))))
    with torch.no_grad():
        assert torch.allclose(tta.adapt(net, "tbn")(x), expected, atol=1e-5)


def test_tbn_prior_interpolates_towards_the_source():
    net = _tiny_bn_net()
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        src = net(x)
        far = tta.adapt(net, "tbn", prior=1e9)(x)
        mid = tta.adapt(net, "tbn", prior=4)(x)
        full = tta.adapt(net, "tbn", prior=0)(x)
    assert torch.allclose(far, src, atol=1e-4)
    assert not torch.allclose(mid, src, atol=1e-3) and not torch.allclose(mid, full, atol=1e-3)


@pytest.mark.realdata
def test_tbn_matches_train_mode_bn_on_the_shared_resnet20(cifar10_test, resnet20_checkpoint):
    images, _ = cifar10_test
    idx = np.sort(np.random.default_rng(0).permutation(len(images))[:200])
    x = to_tensor(images[idx])[torch.randperm(200, generator=torch.Generator().manual_seed(1))]
    model = tta.load_model("resnet20", checkpoint=resnet20_checkpoint)
    with torch.no_grad():
        source = model(x)
        reference = copy.deepcopy(model).train()(x)
    adapted = tta.adapt(model, "tbn")
    out = adapted(x)
    assert (out - reference).abs().max().item() <= 1e-3
    assert (out - source).abs().max().item() > 0.1  # adaptation did something
    adapted.reset()
    src_adapter = tta.adapt(model, "source")
    assert torch.equal(src_adapter(x), tta.adapt(model, "source")(x))


def test_reset_restores_the_initial_state_exactly():
    net = _tiny_bn_net()
    adapted = tta.adapt(net, "tbn", prior=8)
    initial = copy.deepcopy(adapted.state_dict())
    with torch.no_grad():
        for p in adapted.parameters():
            p.add_(1.0)
    adapted.reset()
    assert all(torch.equal(initial[k], v) for k, v in adapted.state_dict().items() if isinstance(v, torch.Tensor))


def test_without_a_method_a_batchnorm_model_gets_regime_aware():
    """issue #30: ``tta.adapt(model)`` adapts by default, with the method safe on both label regimes."""
    net = _tiny_bn_net()
    adapted = tta.adapt(net)
    assert adapted.name == "regime-aware" and adapted.output == "probabilities"
    assert adapted.hparams() == tta.adapt(net, "regime-aware").hparams()
    probs = adapted(torch.rand(6, 3, 8, 8))
    torch.testing.assert_close(probs.sum(1), torch.ones(6))


def test_without_a_method_a_model_regime_aware_cannot_run_is_not_adapted_and_warned_about(caplog):
    no_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    headless = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.rand(5, 3, 8, 8)
    for net, why in ((no_bn, "no BatchNorm"), (headless, "nn.Linear")):
        caplog.clear()
        with caplog.at_level("WARNING", logger="tta.adaptation"):
            adapted = tta.adapt(net)
        assert adapted.name == "source"
        with torch.no_grad():
            torch.testing.assert_close(adapted(x), net(x))
        assert len(caplog.records) == 1 and why in caplog.text and "method='eta'" in caplog.text


def test_unknown_method():
    with pytest.raises(UnknownNameError) as exc:
        tta.adapt(_tiny_bn_net(), "tbn-9000")
    assert "source" in str(exc.value) and "tbn" in str(exc.value)


def test_bn_method_on_a_model_without_batchnorm():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten())
    with pytest.raises(TTAError, match="no BatchNorm"):
        tta.adapt(net, "tbn")


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.rand(3, 8, 8), "shape"),
        (torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8), "dtype"),
        (torch.full((2, 3, 8, 8), float("nan")), "NaN"),
        (torch.rand(1, 3, 8, 8), "at least 2"),
    ],
)
def test_bad_batches_are_named(x, match):
    with pytest.raises(InputError, match=match):
        tta.adapt(_tiny_bn_net(), "tbn")(x)


def test_tbn_with_a_prior_accepts_single_images():
    out = tta.adapt(_tiny_bn_net(), "tbn", prior=16)(torch.rand(1, 3, 8, 8))
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_adapters_build_no_autograd_graph():
    out = tta.adapt(_tiny_bn_net(), "tbn")(torch.rand(2, 3, 8, 8))
    assert out.grad_fn is None and not out.requires_grad


def test_memory_format_follows_the_model_on_cpu():
    """channels_last for BatchNorm CNNs, NCHW where group norms are slower in channels_last."""
    bn_model = tta.adapt(_tiny_bn_net(), "source")
    assert bn_model.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    gn_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten())
    gn_model = tta.adapt(gn_net, "source")
    assert gn_model.model[0].weight.is_contiguous()
    assert not gn_model.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    forced = tta.adapt(gn_net, "source", channels_last=True)
    assert forced.model[0].weight.is_contiguous(memory_format=torch.channels_last)
