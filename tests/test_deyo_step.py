"""DeYO's one-step function and patch shuffle, against an independent transcription of
Jhyun17/DeYO (methods/deyo.py) on real CIFAR-10 images through ResNet-20, and closed forms."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from entropy_batch import assert_params_equal, noisy_batches, twin_models
from tta.errors import InputError
from tta.methods import method_defaults
from tta.methods._entropy import softmax_entropy
from tta.methods.deyo import deyo_step, patch_shuffle
from tta.methods.sar import sar_parameters

#: the options ``tta.adapt(model, "deyo", dataset="cifar10")`` resolves, which the step takes
STEP_OPTIONS = {k: method_defaults("deyo", "cifar10")[k] for k in (
    "plpd_threshold", "filter_factor", "weight_factor", "aug", "patch_len", "reweight_ent", "reweight_plpd")}


def step(model, x, opt, **kw):
    return deyo_step(model, x, opt, **{**STEP_OPTIONS, **kw})


# ---- transcription of the reference (DeYO methods/deyo.py, aug_type 'patch'), kept plain ----------
def ref_entropy(x):
    return -(x.softmax(1) * x.log_softmax(1)).sum(1)


def ref_patch_shuffle(x_prime, patch_len, rand):
    """rearrange 'b c (ps1 h) (ps2 w) -> b (ps1 ps2) c h w', permute, and back, written with slices."""
    b, c, H, W = x_prime.shape
    h, w = H // patch_len, W // patch_len
    patches = torch.stack([x_prime[:, :, i * h:(i + 1) * h, j * w:(j + 1) * w]
                           for i in range(patch_len) for j in range(patch_len)], dim=1)
    perm_idx = torch.argsort(rand(patches.shape[0], patches.shape[1]), dim=-1)
    patches = patches[torch.arange(patches.shape[0]).unsqueeze(-1), perm_idx]
    out = torch.empty_like(x_prime)
    for i in range(patch_len):
        for j in range(patch_len):
            out[:, :, i * h:(i + 1) * h, j * w:(j + 1) * w] = patches[:, i * patch_len + j]
    return out


def ref_forward_and_adapt(x, model, optimizer, deyo_margin, margin, plpd_threshold, patch_len, rand):
    outputs = model(x)
    optimizer.zero_grad()
    entropys = ref_entropy(outputs)
    filter_ids_1 = torch.where(entropys < deyo_margin)
    entropys = entropys[filter_ids_1]
    if len(entropys) == 0:
        return outputs, filter_ids_1[0], filter_ids_1[0]
    x_prime = ref_patch_shuffle(x[filter_ids_1].detach(), patch_len, rand)
    with torch.no_grad():
        outputs_prime = model(x_prime)
    prob_outputs = outputs[filter_ids_1].softmax(1)
    prob_outputs_prime = outputs_prime.softmax(1)
    cls1 = prob_outputs.argmax(dim=1)
    plpd = (torch.gather(prob_outputs, 1, cls1.reshape(-1, 1))
            - torch.gather(prob_outputs_prime, 1, cls1.reshape(-1, 1))).reshape(-1)
    filter_ids_2 = torch.where(plpd > plpd_threshold)
    entropys = entropys[filter_ids_2]
    if len(entropys) == 0:
        return outputs, filter_ids_1[0], filter_ids_1[0][filter_ids_2[0]]
    plpd = plpd[filter_ids_2]
    coeff = (1 * (1 / (torch.exp(entropys.clone().detach() - margin)))
             + 1 * (1 / (torch.exp(-1. * plpd.clone().detach()))))
    loss = entropys.mul(coeff).mean(0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return outputs, filter_ids_1[0], filter_ids_1[0][filter_ids_2[0]]
# -------------------------------------------------------------------------------------------------


def _run_both(checkpoint, batches, *, plpd_threshold=0.2, lr=1e-3):
    ref_model, model = twin_models(checkpoint)
    ref_opt = torch.optim.Adam([p for p in ref_model.parameters() if p.requires_grad], lr, betas=(0.9, 0.999))
    opt = torch.optim.Adam([p for _, p in sar_parameters(model)], lr, betas=(0.9, 0.999))
    ref_gen, gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)

    def ref_rand(*shape):
        return torch.rand(*shape, generator=ref_gen)

    counts = []
    for x in batches:
        ref_logits, ids1, ids2 = ref_forward_and_adapt(
            x, ref_model, ref_opt, 0.5 * math.log(10), 0.4 * math.log(10), plpd_threshold, 4, ref_rand)
        out = step(model, x, opt, generator=gen, plpd_threshold=plpd_threshold)
        torch.testing.assert_close(out.logits, ref_logits.detach(), rtol=0, atol=1e-10)
        assert torch.equal(out.diagnostics["mask_1"].nonzero().squeeze(1), ids1)
        if ids1.numel():
            assert torch.equal(out.diagnostics["mask_2"].nonzero().squeeze(1), ids2)
        assert out.updated == (ids2.numel() > 0)
        assert_params_equal(ref_model, model)
        counts.append((ids1.numel(), ids2.numel()))
    return counts


@pytest.mark.realdata
def test_deyo_matches_reference_over_steps(cifar10_test, resnet20_checkpoint):
    batches = noisy_batches(cifar10_test, n_batches=4, batch_size=48)
    counts = _run_both(resnet20_checkpoint, batches)
    assert all(0 < n2 < n1 < 48 for n1, n2 in counts)  # both filters select a proper subset


@pytest.mark.realdata
def test_deyo_batch_size_one_matches_reference(cifar10_test, resnet20_checkpoint):
    batches = noisy_batches(cifar10_test, n_batches=2, batch_size=1, sigma=0.02)
    _run_both(resnet20_checkpoint, batches)


def test_patch_shuffle_matches_slicing_and_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 8, 12, generator=g)
    identity = torch.arange(16).expand(3, 16)
    assert torch.equal(patch_shuffle(x, 4, perm=identity), x)
    assert torch.equal(patch_shuffle(x, 1, generator=g), x)  # one patch: nothing to shuffle
    drawn = patch_shuffle(x, 4, generator=torch.Generator().manual_seed(5))
    r = torch.Generator().manual_seed(5)
    assert torch.equal(drawn, ref_patch_shuffle(x, 4, lambda *s: torch.rand(*s, generator=r)))
    # a shuffle only moves patches: each sample keeps its multiset of patches
    assert torch.equal(drawn.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert not torch.equal(drawn, x)


def test_patch_shuffle_resizes_indivisible_sides():
    x = torch.rand(2, 3, 30, 30)
    out = patch_shuffle(x, 4, perm=torch.arange(16).expand(2, 16))
    down = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    up = F.interpolate(down, size=(30, 30), mode="bilinear", align_corners=False, antialias=True)
    assert out.shape == x.shape and torch.allclose(out, up)
    with pytest.raises(InputError, match="DeYO"):
        patch_shuffle(torch.rand(1, 3, 2, 2), 4)


def _toy_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6, track_running_stats=False),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))
    model.requires_grad_(False)
    model[1].requires_grad_(True)
    model[5].weight.data.mul_(5)
    return model


def test_deyo_identity_shuffle_has_zero_plpd():
    """With a 1×1 grid the 'destroyed' batch is the selected batch itself; with every sample
    selected, z' = z, so PLPD = 0 and τ_PLPD = 0.2 rejects all: no update."""
    model = _toy_model()
    opt = torch.optim.SGD(model[1].parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    out = step(model, torch.randn(8, 3, 8, 8), opt, generator=None, patch_len=1, filter_factor=10.0)
    assert out.diagnostics["selected_1"] == 8 and out.diagnostics["selected_2"] == 0 and not out.updated
    assert torch.equal(out.diagnostics["plpd"], torch.zeros(8))
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


def test_deyo_identity_shuffle_loss_closed_form():
    """PLPD = 0 and τ_PLPD < 0: every sample counts with weight 1/exp(e - E0) + exp(0)."""
    model = _toy_model()
    x = torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        e = softmax_entropy(model(x))
    expected = (e * (1 / torch.exp(e - 0.4 * math.log(10)) + 1)).mean()
    opt = torch.optim.SGD(model[1].parameters(), lr=0.1)
    out = step(model, x, opt, generator=None, patch_len=1, filter_factor=10.0, plpd_threshold=-1.0)
    assert out.updated and out.loss == pytest.approx(float(expected), rel=1e-6)


def test_deyo_collapse_is_flagged_not_raised():
    model = _toy_model()
    opt = torch.optim.SGD(model[1].parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    out = step(model, torch.full((4, 3, 8, 8), float("nan")), opt, generator=None)
    assert out.collapsed and not out.updated
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
