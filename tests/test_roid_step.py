"""ROID's step against a transcription of mariodoebler/test-time-adaptation ``methods/roid.py``.

The transcription (configure_model, collect_params, loss_calculation, forward_and_adapt,
ema_update_model, the prior correction, and the SLR / SCE / Entropy losses) is written
from the official code; its one random draw, ``tta_transform(imgs_test[~mask])``, is
injected so both sides augment the kept samples identically.
"""
from __future__ import annotations

from copy import deepcopy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tta
from test_cotta_step import noisy_batches
from tta.methods._view_augment import ROID_AUGMENT, augment_views, sample_view_params
from tta.errors import InputError
from tta.methods import method_defaults
from tta.methods.roid import RoidHyper, prior_correction, roid_parameters, roid_step, soft_likelihood_ratio

pytestmark = pytest.mark.realdata
CFG_BATCH = 200  # cfg.TEST.BATCH_SIZE, deliberately unlike the batches fed here


@pytest.fixture(scope="module")
def resnet20(resnet20_checkpoint):
    return tta.load_model("resnet20", checkpoint=resnet20_checkpoint)


class OfficialROID:
    def __init__(self, model, num_classes=10, lr=1e-3):
        model = deepcopy(model)
        model.eval()
        model.requires_grad_(False)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.requires_grad_(True)
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
            elif isinstance(m, nn.BatchNorm1d):
                m.train()
                m.requires_grad_(True)
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                m.requires_grad_(True)
        params = []
        for nm, m in model.named_modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                for np_, p in m.named_parameters():
                    if np_ in ["weight", "bias"] and p.requires_grad:
                        params.append(p)
        self.model = model
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.src_model = deepcopy(model).cpu()
        for param in self.src_model.parameters():
            param.detach_()
        self.class_probs_ema = 1 / num_classes * torch.ones(num_classes)
        self.temperature, self.momentum_probs, self.momentum_src = 1 / 3, 0.9, 0.99

    def loss_calculation(self, imgs_test, transform):
        outputs = self.model(imgs_test)
        with torch.no_grad():
            weights_div = 1 - F.cosine_similarity(self.class_probs_ema.unsqueeze(dim=0), outputs.softmax(1), dim=1)
            weights_div = (weights_div - weights_div.min()) / (weights_div.max() - weights_div.min())
            mask = weights_div < weights_div.mean()
            weights_cert = -(-(outputs.softmax(1) * outputs.log_softmax(1)).sum(1))
            weights_cert = (weights_cert - weights_cert.min()) / (weights_cert.max() - weights_cert.min())
            weights = torch.exp(weights_div * weights_cert / self.temperature)
            weights[mask] = 0.0
            self.class_probs_ema = (self.momentum_probs * self.class_probs_ema
                                    + (1 - self.momentum_probs) * outputs.softmax(1).mean(0))
        probs = torch.clamp(outputs.softmax(1), min=0.0, max=0.99)
        loss_out = -(probs * torch.log((probs / (torch.ones_like(probs) - probs)) + 1e-5)).sum(1)
        loss_out = loss_out * weights
        loss_out = loss_out[~mask]
        loss = loss_out.sum() / CFG_BATCH
        outputs_aug = self.model(transform(imgs_test[~mask]))
        x, x_ema = outputs_aug, outputs[~mask]
        sce = -0.5 * (x_ema.softmax(1) * x.log_softmax(1)).sum(1) - 0.5 * (x.softmax(1) * x_ema.log_softmax(1)).sum(1)
        loss += (sce * weights[~mask]).sum() / CFG_BATCH
        return outputs, loss

    @torch.enable_grad()
    def forward_and_adapt(self, x, transform):
        outputs, loss = self.loss_calculation(x, transform)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        for p, q in zip(self.model.parameters(), self.src_model.parameters()):
            if p.requires_grad:
                p.data = self.momentum_src * p.data + (1 - self.momentum_src) * q.data
        with torch.no_grad():
            prior = outputs.softmax(1).mean(0)
            smooth = max(1 / outputs.shape[0], 1 / outputs.shape[1]) / torch.max(prior)
            smoothed_prior = (prior + smooth) / (1 + smooth * outputs.shape[1])
            outputs *= smoothed_prior
        return outputs


#: the step's hyperparameters as ``tta.adapt(model, "roid", dataset="cifar10")`` resolves them
HYPER = RoidHyper.from_options(method_defaults("roid", "cifar10"))


class Ours:
    """The parts ``tta.adapt`` builds for ROID (student, optimizer, state), for calling ``roid_step`` directly."""

    def __init__(self, model):
        self.adapter = tta.adapt(deepcopy(model), "roid", dataset="cifar10", channels_last=False)
        self.model, self.opt, self.types = self.adapter.model, self.adapter.optimizer, self.adapter.memory.types
        self.state = self.adapter.memory.roid_state()

    def step(self, x, generator=None, **kw):
        return roid_step(self.model, self.opt, self.state, x, generator, HYPER, norm_types=self.types,
                         **{"batch_size": None, **kw})

    def parameters(self):
        return roid_parameters(self.model, self.types)


def test_the_hyperparameters_are_the_official_ones():
    """``_C.ROID`` of mariodoebler/test-time-adaptation conf.py."""
    assert (HYPER.use_weighting, HYPER.use_prior_correction, HYPER.use_consistency) == (True, True, True)
    assert (HYPER.momentum_src, HYPER.momentum_probs, HYPER.temperature) == (0.99, 0.9, 1 / 3)


def test_roid_step_matches_official_over_several_steps(cifar10_test, resnet20):
    images, _ = cifar10_test
    xs = noisy_batches(images, 4, 16, sigma=0.15)
    official = OfficialROID(resnet20)
    ours = Ours(resnet20)
    model, state = ours.model, ours.state
    g = torch.Generator().manual_seed(2)
    for x in xs:
        params = sample_view_params(1, 32, ROID_AUGMENT, g)
        captured = {}

        def transform(subset, params=params):  # the injected draw; records what the official fed it
            captured["x"] = subset
            return augment_views(subset, params, ROID_AUGMENT)

        expected = official.forward_and_adapt(x, transform)
        got = ours.step(x, batch_size=CFG_BATCH, augmented=transform(captured["x"]))
        kept = got.diagnostics["kept"]
        assert not got.collapsed and got.updated and 0 < kept < 16 and kept == captured["x"].shape[0]
        assert torch.allclose(got.logits, expected, atol=1e-6, rtol=0), (got.logits - expected).abs().max()
        assert torch.allclose(state.class_probs, official.class_probs_ema, atol=1e-7)
        for (name, p), q in zip(model.named_parameters(), official.model.parameters()):
            assert torch.allclose(p, q, atol=1e-7, rtol=0), name
    moved = max((p - state.source[n]).abs().max() for n, p in ours.parameters())
    assert moved > 1e-4
    # only the affine parameters of the (swapped) BatchNorm layers train
    bn_names = {n for n, m in resnet20.named_modules() if isinstance(m, nn.BatchNorm2d)}
    trained = ours.parameters()
    assert trained and {n.rsplit(".", 1)[0] for n, _ in trained} == bn_names
    assert sum(p.requires_grad for p in model.parameters()) == len(trained)


def test_drawn_augmentation_is_reproducible_and_differs_by_seed(cifar10_test, resnet20):
    images, _ = cifar10_test
    xs = noisy_batches(images, 2, 16)
    runs = []
    for seed in (5, 5, 6):
        ours = Ours(resnet20)
        g = torch.Generator().manual_seed(seed)
        runs.append(torch.cat([ours.step(x, g).logits for x in xs]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_loss_and_prior_closed_forms():
    z = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    q = torch.tensor([0.99, 1.0 / 3])  # softmax clamped at 0.99 in the first row
    slr = soft_likelihood_ratio(z)
    p1 = z[0].softmax(0)
    expected0 = -(0.99 * torch.log(torch.tensor(0.99 / 0.01 + 1e-5)) + 2 * p1[1] * torch.log(p1[1] / (1 - p1[1]) + 1e-5))
    assert torch.allclose(slr[0], expected0, atol=1e-5)
    assert torch.allclose(slr[1], -3 * q[1] * torch.log(q[1] / (1 - q[1]) + 1e-5), atol=1e-6)
    # uniform logits: prior uniform, the correction is a constant factor 1/C
    u = torch.randn(1, 4).expand(5, 4).clone()
    u[:] = 2.0
    assert torch.allclose(prior_correction(u), u / 4)


def test_batch_of_one_raises_and_identical_samples_skip_the_update(cifar10_test, resnet20):
    images, _ = cifar10_test
    x = noisy_batches(images, 1, 8)[0]
    ours = Ours(resnet20)
    model, state = ours.model, ours.state
    with pytest.raises(InputError, match="roid needs at least 2 samples"):
        ours.step(x[:1])
    before = deepcopy(model.state_dict())
    out = ours.step(x[:1].expand(4, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0))
    assert out.collapsed
    assert torch.equal(state.class_probs, torch.full((10,), 0.1))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    state.class_probs.fill_(0.5)
    state.reset()
    assert torch.equal(state.class_probs, torch.full((10,), 0.1))
