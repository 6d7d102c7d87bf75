"""SHOT-IM's online step against an independent transcription of LINs-lab/ttab shot.py
(cls_par = 0) on real CIFAR-10 images through ResNet-20 in train mode, and closed forms."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from entropy_batch import noisy_batches
from tta.errors import InputError
from tta.methods.shot_im import extractor_parameters, shot_im_loss, shot_im_step


def registered_parameters(model):
    """(name, parameter) of what the registered ``shot-im`` trains (``extractor_parameters``)."""
    ids = {id(p) for p in extractor_parameters(model)}
    return [(n, p) for n, p in model.named_parameters() if id(p) in ids]

FROZEN = ["fc", "classifier", "head", "linear"]  # ttab's list plus this package's CIFAR ResNet classifier


# ---- transcription of the reference (ttab SHOT.one_adapt_step, cls_par = 0, ent_par = 1) -----------
def ref_initialize(model):
    model.train()
    params = []
    for name, module in model.named_children():
        if name in FROZEN:
            module.requires_grad_(False)
        else:
            params += list(module.parameters())
    return params


def ref_one_adapt_step(model, optimizer, x):
    y_hat = model(x)
    entropy_loss = (-(y_hat.softmax(1) * y_hat.log_softmax(1)).sum(1)).mean(0)
    softmax_out = F.softmax(y_hat, dim=-1)
    msoftmax = softmax_out.mean(dim=0)
    div_loss = torch.sum(msoftmax * torch.log(msoftmax + 1e-5))
    loss = 0.0 * 0 + 1.0 * (entropy_loss + div_loss)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return y_hat, loss.item()
# -------------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_shot_im_matches_reference_over_steps(cifar10_test, resnet20_checkpoint):
    import tta

    ref_model = tta.load_model("resnet20", checkpoint=resnet20_checkpoint).double()
    model = copy.deepcopy(ref_model)
    ref_opt = torch.optim.SGD(ref_initialize(ref_model), lr=1e-3, momentum=0.9, nesterov=True)
    named = registered_parameters(model)
    model.train()
    model.linear.requires_grad_(False)
    opt = torch.optim.SGD([p for _, p in named], lr=1e-3, momentum=0.9, nesterov=True)
    assert not any(n.startswith("linear.") for n, _ in named) and any(".conv" in n for n, _ in named)
    initial_linear = model.linear.weight.detach().clone()
    for x in noisy_batches(cifar10_test, n_batches=3, batch_size=48):
        ref_logits, ref_loss = ref_one_adapt_step(ref_model, ref_opt, x)
        out = shot_im_step(model, x, opt)
        torch.testing.assert_close(out.logits, ref_logits.detach(), rtol=0, atol=1e-10)
        assert out.loss == pytest.approx(ref_loss, rel=1e-10)
        for (name, a), (_, b) in zip(ref_model.state_dict().items(), model.state_dict().items()):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")
    assert torch.equal(model.linear.weight, initial_linear)  # classifier frozen
    assert not torch.equal(model.conv1.weight, tta.load_model("resnet20", checkpoint=resnet20_checkpoint)
                           .double().conv1.weight)  # the feature extractor moved


def test_shot_im_loss_closed_form():
    """C samples, each certain of a different class: entropy 0 and p̄ uniform, so the loss is
    Σ_c (1/C) log(1/C + 1e-5) (−ln C without the smoothing)."""
    logits = torch.eye(10, dtype=torch.float64) * 200
    expected = math.log(0.1 + 1e-5)
    assert float(shot_im_loss(logits)) == pytest.approx(expected, rel=1e-9)
    # all samples certain of the same class: both terms vanish (up to the smoothing)
    same = torch.zeros(4, 10, dtype=torch.float64)
    same[:, 3] = 200
    assert float(shot_im_loss(same)) == pytest.approx(math.log(1 + 1e-5), abs=1e-9)


def test_shot_im_refuses_batch_size_one():
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Flatten(), nn.Linear(12, 4)))
    model.add_module("fc", nn.Linear(4, 10))
    opt = torch.optim.SGD([p for _, p in registered_parameters(model)], lr=0.1)
    with pytest.raises(InputError, match="SHOT-IM needs batches of at least 2.*batch size >= 2"):
        shot_im_step(model, torch.randn(1, 3, 2, 2), opt)
    # at B = 1 the loss is the smoothing residue only, Σ p log(1 + 1e-5/p) <= C · 1e-5: no signal
    one = torch.randn(1, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert 0 <= float(shot_im_loss(one)) <= 10 * 1e-5


def test_shot_im_collapse_is_flagged_not_raised():
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Flatten(), nn.Linear(12, 4)))
    model.add_module("fc", nn.Linear(4, 10))
    opt = torch.optim.SGD([p for _, p in registered_parameters(model)], lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    out = shot_im_step(model, torch.full((3, 3, 2, 2), float("nan")), opt)
    assert out.collapsed and not out.updated
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
