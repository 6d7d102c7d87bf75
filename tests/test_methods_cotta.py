"""The registered ``cotta`` equals a transcription of qinenergy/cotta ``cifar/cotta.py`` (in
tests/test_cotta_step.py) on real noisy CIFAR-10 batches through ResNet-20, the augmented views
and restore masks drawn from a generator seeded like the adapter's; UnMix-TNS + CoTTA gives
student, teacher and anchor their own components, restores the UnMix affine parameters with the
rest, keeps the UnMix-TNS defaults and the protocol lr, and resets exactly."""
from __future__ import annotations

import pytest
import torch

import tta
from method_twins import assert_same_parameters, reference_and_adapter
from test_cotta_step import OfficialCoTTA, noisy_batches
from tta.methods._view_augment import augment
from tta.methods.cotta import draw_restore_masks
from tta.methods.unmix_tns import UnMixTNS2d
from tta.methods._view_forward import forward_views

pytestmark = pytest.mark.realdata


def test_registered_cotta_equals_the_official_step(cifar10_test, resnet20_checkpoint):
    raw, adapter = reference_and_adapter(resnet20_checkpoint, "cotta", torch.float32, configure=lambda m: m,
                                         n_augmentations=6, rst=0.05, views_per_call=1, seed=1)
    hp = adapter.hparams()
    assert (hp["mt"], hp["ap"], hp["optimizer"], hp["lr"]) == (0.999, 0.92, "adam", 1e-3)
    official = OfficialCoTTA(raw, mt=0.999, rst=0.05, ap=0.92)
    g = torch.Generator().manual_seed(1)
    for x in noisy_batches(cifar10_test[0], 3, 16):
        views = augment(x, 6, generator=g).view(6, *x.shape)
        masks = draw_restore_masks(official.model, 0.05, g)
        expected = official.forward_and_adapt(x, list(views), masks)
        got = adapter(x)
        assert torch.allclose(got, expected, atol=1e-6, rtol=0), (got - expected).abs().max()
        assert_same_parameters(official.model, adapter.model, atol=1e-7)
        assert_same_parameters(official.model_ema, adapter.teacher, atol=1e-7)
    assert_same_parameters(official.model_anchor, adapter.memory.anchor, atol=0)


def test_views_in_one_forward_equal_one_call_per_view(cifar10_test, resnet20_checkpoint):
    """The tbn teacher normalizes each view with its own statistics inside a grouped forward."""
    model = tta.load_model("resnet20", checkpoint=resnet20_checkpoint)
    x = noisy_batches(cifar10_test[0], 1, 16)[0]
    out = {k: tta.adapt(model, "cotta", views_per_call=k, channels_last=False)(x) for k in (1, 8)}
    assert torch.allclose(out[8], out[1], atol=1e-5, rtol=0)
    a = tta.adapt(model, "cotta", views_per_call=8, channels_last=False)
    views = augment(x, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        one_batch = a.teacher(views).view(8, 16, -1).mean(0)  # statistics pooled over all views
        grouped = forward_views(a.teacher, views.view(8, *x.shape), 8).mean(0)
        looped = forward_views(a.teacher, views.view(8, *x.shape), 1).mean(0)
    assert torch.allclose(grouped, looped, atol=1e-5) and not torch.allclose(one_batch, looped, atol=1e-3)


def test_unmix_tns_plus_cotta_keeps_components_per_model(cifar10_test, resnet20_checkpoint):
    model = tta.load_model("resnet20", checkpoint=resnet20_checkpoint)
    a = tta.adapt(model, "cotta", dataset="cifar10", shift="mixed", stats="unmix-tns", n_augmentations=4,
                  rst=0.5)
    hp = a.hparams()
    assert hp["stats_options"]["K"] == 128 and (hp["optimizer"], hp["lr"]) == ("adam", 1e-5)
    parts = {"student": a.model, "teacher": a.teacher, "anchor": a.memory.anchor}
    first = {k: next(m for m in v.modules() if isinstance(m, UnMixTNS2d)) for k, v in parts.items()}
    assert len({id(layer) for layer in first.values()}) == 3  # each model has its own layers
    initial = {k: layer.mu_k.clone() for k, layer in first.items()}
    trained = {id(p) for p in a.optimizer.param_groups[0]["params"]}
    assert {id(first["student"].weight), id(first["student"].bias)} <= trained
    xs = noisy_batches(cifar10_test[0], 2, 32)
    outs = [a(x) for x in xs]
    mus = {k: layer.mu_k for k, layer in first.items()}
    for k in parts:  # every model's components adapted, and differently
        assert not torch.equal(mus[k], initial[k]), k
    assert not torch.equal(mus["student"], mus["teacher"]) and not torch.equal(mus["anchor"], mus["teacher"])
    # the stochastic restore (p = 0.5) puts UnMix affine entries back to the anchor's (source) values
    w, w0 = first["student"].weight, first["anchor"].weight
    assert bool((w == w0).any()) and not torch.equal(w, w0)
    a.reset()
    assert all(torch.equal(layer.mu_k, initial[k]) for k, layer in first.items())
    assert torch.equal(a(xs[0]), outs[0])
