"""CoTTA's step against a transcription of the official qinenergy/cotta ``cifar/cotta.py`` step.

The transcription below is written from the official code (model.train(), collect_params,
deepcopies, forward_and_adapt, update_ema_variables, the restore loop), with its random
draws (the 32 ``transform(x)`` calls and the ``torch.rand`` restore masks) replaced by
injected tensors so both sides see the same randomness.
"""
from __future__ import annotations

from copy import deepcopy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import tta
from conftest import to_tensor
from tta.methods._view_augment import augment
from tta.methods._view_forward import forward_views
from tta.methods import method_defaults
from tta.methods.cotta import (CoTTAHyper, CoTTAModels, cotta_loss, cotta_parameters, cotta_step, draw_restore_masks,
                               ema_update_, stochastic_restore_)

#: the step's hyperparameters as ``tta.adapt(model, "cotta", dataset="cifar10")`` resolves them
HYPER = CoTTAHyper.from_options(method_defaults("cotta", "cifar10"))

pytestmark = pytest.mark.realdata


def noisy_batches(images: np.ndarray, n_batches: int, batch: int, sigma: float = 0.1) -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    x = to_tensor(images[: n_batches * batch])
    x = (x + torch.from_numpy(rng.normal(0, sigma, x.shape)).float()).clamp(0, 1)
    return list(x.split(batch))


@pytest.fixture(scope="module")
def resnet20(resnet20_checkpoint):
    return tta.load_model("resnet20", checkpoint=resnet20_checkpoint)


class OfficialCoTTA:
    """qinenergy/cotta cifar/cotta.py, CIFAR branch, randomness injected."""

    def __init__(self, model, mt, rst, ap, lr=1e-3):
        model = deepcopy(model)
        model.train()
        model.requires_grad_(False)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.requires_grad_(True)
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
            else:
                m.requires_grad_(True)
        params = []
        for nm, m in model.named_modules():
            for np_, p in m.named_parameters():
                if np_ in ["weight", "bias"] and p.requires_grad:
                    params.append(p)
        self.model = model
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.model_state = deepcopy(model.state_dict())
        self.model_anchor = deepcopy(model)
        self.model_ema = deepcopy(model)
        for param in self.model_ema.parameters():
            param.detach_()
        self.mt, self.rst, self.ap = mt, rst, ap

    @torch.enable_grad()
    def forward_and_adapt(self, x, views, masks):
        outputs = self.model(x)
        anchor_prob = torch.nn.functional.softmax(self.model_anchor(x), dim=1).max(1)[0]
        standard_ema = self.model_ema(x)
        outputs_emas = [self.model_ema(v).detach() for v in views]
        if anchor_prob.mean(0) < self.ap:
            outputs_ema = torch.stack(outputs_emas).mean(0)
        else:
            outputs_ema = standard_ema
        loss = (-(outputs_ema.softmax(1) * outputs.log_softmax(1)).sum(1)).mean(0)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        for ema_param, param in zip(self.model_ema.parameters(), self.model.parameters()):
            ema_param.data[:] = self.mt * ema_param[:].data[:] + (1 - self.mt) * param[:].data[:]
        masks = iter(masks)
        for nm, m in self.model.named_modules():
            for npp, p in m.named_parameters():
                if npp in ["weight", "bias"] and p.requires_grad:
                    mask = next(masks).float()
                    with torch.no_grad():
                        p.data = self.model_state[f"{nm}.{npp}"] * mask + p * (1.0 - mask)
        return outputs_ema


def make_ours(model, **options):
    """The models and optimizer ``tta.adapt`` builds for CoTTA, for calling ``cotta_step`` directly."""
    adapter = tta.adapt(deepcopy(model), "cotta", dataset="cifar10", channels_last=False, **options)
    return CoTTAModels.of(adapter), adapter.optimizer


def assert_params_close(a: nn.Module, b: nn.Module, atol: float) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=atol, rtol=0), f"{name}: {(p - q).abs().max().item()}"


# Adam's first steps are about lr * sign(grad), so a 1e-7 rounding difference in a tiny
# gradient entry can move a weight by up to lr; the exact comparison therefore runs the
# views one per call (the official arithmetic) and the grouped path is checked separately.
@pytest.mark.parametrize("ap", [0.92, 0.0])  # 0.92: the view-averaged teacher; 0.0: the plain teacher
def test_cotta_step_matches_official_over_several_steps(cifar10_test, resnet20, ap):
    images, _ = cifar10_test
    xs = noisy_batches(images, 3, 16)
    hyper = replace(HYPER, ap=ap, n_augmentations=6, rst=0.05, views_per_call=1)
    official = OfficialCoTTA(resnet20, mt=hyper.mt, rst=hyper.rst, ap=ap)
    models, opt = make_ours(resnet20)
    g = torch.Generator().manual_seed(1)
    for x in xs:
        views = augment(x, hyper.n_augmentations, generator=g).view(hyper.n_augmentations, *x.shape)
        masks = draw_restore_masks(models.student, hyper.rst, g)
        assert any(bool(m.any()) for m in masks)  # the restore actually changes entries
        expected = official.forward_and_adapt(x, list(views), masks)
        got = cotta_step(models, opt, x, None, hyper, views=views, restore_masks=masks)
        assert got.diagnostics["augmented"] == (ap > 0) and not got.collapsed
        assert torch.allclose(got.logits, expected, atol=1e-6, rtol=0), (got.logits - expected).abs().max()
        assert_params_close(models.student, official.model, atol=1e-7)
        assert_params_close(models.teacher, official.model_ema, atol=1e-7)
    assert_params_close(models.anchor, official.model_anchor, atol=0)
    # the student moved away from the source and the teacher moved less than the student
    moved = [(p - models.source[n]).abs().max() for n, p in cotta_parameters(models.student)]
    assert max(moved) > 1e-4


def test_grouped_view_forward_equals_one_call_per_view(cifar10_test, resnet20):
    images, _ = cifar10_test
    x = noisy_batches(images, 1, 16)[0]
    models, _ = make_ours(resnet20)
    views = augment(x, 8, generator=torch.Generator().manual_seed(3)).view(8, *x.shape)
    with torch.no_grad():
        loop = torch.stack([models.teacher(v) for v in views])
        vec = forward_views(models.teacher, views, views_per_call=8)
        chunks = forward_views(models.teacher, views, views_per_call=3)  # 3 + 3 + 2
        whole = models.teacher(views.flatten(0, 1)).view(8, 16, -1)  # one batch of 128: wrong statistics
    assert torch.allclose(vec, loop, atol=1e-4, rtol=0) and torch.allclose(chunks, loop, atol=1e-4, rtol=0)
    assert torch.equal(forward_views(models.teacher, views), loop)  # CPU default: one view per call
    assert (whole - loop).abs().max() > 1e-2  # per-view batch statistics matter


def test_restore_with_p_one_returns_source_and_ema_one_keeps_teacher(cifar10_test, resnet20):
    images, _ = cifar10_test
    x = noisy_batches(images, 1, 16)[0]
    adapter = tta.adapt(deepcopy(resnet20), "cotta", dataset="cifar10", channels_last=False)
    models, opt = CoTTAModels.of(adapter), adapter.optimizer
    teacher0 = deepcopy(models.teacher.state_dict())
    g = torch.Generator().manual_seed(0)
    out = cotta_step(models, opt, x, g, replace(HYPER, mt=1.0, rst=1.0, n_augmentations=4))
    assert not out.collapsed
    for name, p in cotta_parameters(models.student):
        assert torch.equal(p.detach(), models.source[name])
    for k, v in models.teacher.state_dict().items():
        assert torch.equal(v, teacher0[k])
    # save / load / reset of what CoTTA carries across batches, through the adapter
    source = deepcopy(models.anchor.state_dict())
    cotta_step(models, opt, x, g, replace(HYPER, rst=0.0, n_augmentations=4))
    saved = deepcopy(adapter.state_dict())
    adapter.reset()
    assert all(torch.equal(v, source[k]) for k, v in models.teacher.state_dict().items())
    assert all(torch.equal(v, source[k]) for k, v in models.student.state_dict().items())
    adapter.load_state_dict(saved)
    assert all(torch.equal(v, saved["teacher." + k]) for k, v in models.teacher.state_dict().items())
    assert not all(torch.equal(v, source[k]) for k, v in models.teacher.state_dict().items())


def test_ema_and_restore_closed_forms():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    a0 = deepcopy(a)
    ema_update_(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * a0.weight + 0.1 * b.weight)
    source = {k: v.clone() for k, v in a0.state_dict().items()}
    masks = [torch.tensor([[True, False, True, False]] * 3), torch.tensor([False, True, False])]
    stochastic_restore_(a, source, masks)
    assert torch.equal(a.weight[:, 0], a0.weight[:, 0]) and not torch.equal(a.weight[:, 1], a0.weight[:, 1])
    assert torch.equal(a.bias[1], a0.bias[1]) and not torch.equal(a.bias[0], a0.bias[0])


def test_same_generator_seed_same_run_and_batch_of_one(cifar10_test, resnet20):
    images, _ = cifar10_test
    xs = noisy_batches(images, 2, 8)
    hyper = replace(HYPER, ap=1.01, n_augmentations=4)  # always augment
    runs = []
    for _ in range(2):
        models, opt = make_ours(resnet20)
        g = torch.Generator().manual_seed(7)
        runs.append([cotta_step(models, opt, x, g, hyper).logits for x in xs])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    models, opt = make_ours(resnet20)
    one = cotta_step(models, opt, xs[0][:1], torch.Generator().manual_seed(0), hyper)
    assert one.logits.shape == (1, 10) and torch.isfinite(one.logits).all() and not one.collapsed


def test_non_finite_input_skips_the_update(cifar10_test, resnet20):
    images, _ = cifar10_test
    x = noisy_batches(images, 1, 8)[0]
    x[0, 0, 0, 0] = float("nan")
    models, opt = make_ours(resnet20)
    before = deepcopy(models.student.state_dict())
    teacher_before = deepcopy(models.teacher.state_dict())
    out = cotta_step(models, opt, x, torch.Generator().manual_seed(0), replace(HYPER, ap=0.0))
    assert out.collapsed
    assert all(torch.equal(v, before[k]) for k, v in models.student.state_dict().items())
    assert all(torch.equal(v, teacher_before[k]) for k, v in models.teacher.state_dict().items())


def test_grouped_forward_refuses_a_model_with_call_to_call_statistics():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.5), nn.Flatten(), nn.LazyLinear(2))
    net.train()  # running statistics update on every call: the views are sequential
    net(torch.rand(2, 3, 8, 8))
    views = torch.rand(3, 2, 3, 8, 8)
    with pytest.raises(ValueError, match="running-statistics"):
        forward_views(net, views, views_per_call=3)

    class EmaStats(nn.Module):  # a custom layer that keeps state across calls
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.zeros(4))

        def forward(self, x):
            self.mean.mul_(0.9).add_(x.mean((0, 2, 3)), alpha=0.1)
            return x - self.mean.view(1, -1, 1, 1)

    net = nn.Sequential(nn.Conv2d(3, 4, 3), EmaStats(), nn.Flatten(), nn.Linear(144, 2))
    before = net[1].mean.clone()
    with pytest.raises(RuntimeError, match="views_per_call=1"):
        forward_views(net, views, views_per_call=3)
    assert torch.equal(net[1].mean, before)
    assert forward_views(net, views, views_per_call=1).shape == (3, 2, 2)


def test_cotta_loss_forms_and_defaults():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    ce = -(t.softmax(1) * s.log_softmax(1)).sum(1)
    rev = -(s.softmax(1) * t.log_softmax(1)).sum(1)
    assert torch.allclose(cotta_loss(s, t, symmetric=False), ce.mean())
    assert torch.allclose(cotta_loss(s, t, symmetric=True), (0.5 * ce + 0.5 * rev).mean())
    hypers = [CoTTAHyper.from_options(method_defaults("cotta", d)) for d in ("cifar10", "cifar100", "imagenet")]
    assert [h.ap for h in hypers] == [0.92, 0.72, 0.1] and [h.rst for h in hypers] == [0.01, 0.01, 0.001]
    assert [h.symmetric for h in hypers] == [False, False, True] and {h.mt for h in hypers} == {0.999}
