"""ETA/EATA's one-step function and Fisher, against an independent transcription of
mr-eggplant/EATA (eata.py, main.py) on real CIFAR-10 images through ResNet-20."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import to_tensor
from entropy_batch import assert_params_equal, noisy_batches, registered_parameters, twin_models
from tta.errors import TTAError
from tta.methods import method_defaults
from tta.methods.eata import ETAState, FisherRegularizer, compute_fisher, eata_step, eta_step

#: the entropy filter ``tta.adapt(model, "eta", dataset="cifar10")`` resolves
MARGIN_FACTOR = method_defaults("eta", "cifar10")["margin_factor"]


# ---- transcription of the reference (EATA eata.py / main.py), kept plain on purpose -------------
def ref_entropy(x):
    return -(x.softmax(1) * x.log_softmax(1)).sum(1)


def ref_update_model_probs(current, new):
    if current is None:
        return None if new.size(0) == 0 else new.mean(0).detach()
    if new.size(0) == 0:
        return current
    return (0.9 * current + (1 - 0.9) * new.mean(0)).detach()


def ref_forward_and_adapt(x, model, optimizer, fishers, e_margin, current_model_probs, fisher_alpha, d_margin):
    outputs = model(x)
    entropys = ref_entropy(outputs)
    filter_ids_1 = torch.where(entropys < e_margin)
    ids1 = filter_ids_1
    ids2 = torch.where(ids1[0] > -0.1)
    entropys = entropys[filter_ids_1]
    if current_model_probs is not None:
        cos = F.cosine_similarity(current_model_probs.unsqueeze(dim=0), outputs[filter_ids_1].softmax(1), dim=1)
        filter_ids_2 = torch.where(torch.abs(cos) < d_margin)
        entropys = entropys[filter_ids_2]
        ids2 = filter_ids_2
        updated_probs = ref_update_model_probs(current_model_probs, outputs[filter_ids_1][filter_ids_2].softmax(1))
    else:
        updated_probs = ref_update_model_probs(current_model_probs, outputs[filter_ids_1].softmax(1))
    coeff = 1 / (torch.exp(entropys.clone().detach() - e_margin))
    loss = entropys.mul(coeff).mean(0)
    if fishers is not None:
        ewc_loss = 0
        for name, param in model.named_parameters():
            if name in fishers:
                ewc_loss += fisher_alpha * (fishers[name][0] * (param - fishers[name][1]) ** 2).sum()
        loss += ewc_loss
    if x[ids1][ids2].size(0) != 0:
        loss.backward()
        optimizer.step()
    optimizer.zero_grad()
    return outputs, updated_probs, ids1[0], ids1[0][ids2[0]]


def ref_fishers(model, loader):
    fishers = {}
    ewc_optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], 0.001)
    for iter_, images in enumerate(loader, start=1):
        outputs = model(images)
        _, targets = outputs.max(1)
        nn.CrossEntropyLoss()(outputs, targets).backward()
        for name, param in model.named_parameters():
            if param.grad is not None:
                fisher = param.grad.data.clone().detach() ** 2
                if iter_ > 1:
                    fisher = fisher + fishers[name][0]
                if iter_ == len(loader):
                    fisher = fisher / iter_
                fishers.update({name: [fisher, param.data.clone().detach()]})
        ewc_optimizer.zero_grad()
    return fishers
# -------------------------------------------------------------------------------------------------


def _source(cifar10_test, n=80):
    images, _ = cifar10_test
    return to_tensor(images[-n:]).double()  # clean images, disjoint from the test batches


def _run_both(cifar10_test, checkpoint, batches, *, d_margin, fisher_alpha=None, lr=1e-3):
    ref_model, model = twin_models(checkpoint)
    e_margin = 0.4 * math.log(10)
    ref_params = [p for p in ref_model.parameters() if p.requires_grad]
    named = registered_parameters(model, "eta", checkpoint)
    params = [p for _, p in named]
    assert [n for n, _ in named] == [n for n, p in ref_model.named_parameters() if p.requires_grad]

    fishers, fisher = None, None
    if fisher_alpha is not None:
        source = _source(cifar10_test)
        order = torch.randperm(source.shape[0], generator=torch.Generator().manual_seed(3))[:70]
        ref_loader = list(source[order].split(32))  # 70 of 80 samples, batches 32, 32, 6
        fishers = ref_fishers(ref_model, ref_loader)
        fisher = compute_fisher(model, params, source, alpha=fisher_alpha, num_samples=70, batch_size=32,
                                generator=torch.Generator().manual_seed(3))
        for (name, _), f, a in zip(named, fisher.fisher, fisher.anchor):
            torch.testing.assert_close(f, fishers[name][0], rtol=1e-12, atol=0)
            torch.testing.assert_close(a, fishers[name][1], rtol=0, atol=0)
        assert any(float(f.abs().max()) > 0 for f in fisher.fisher)
    ref_opt = torch.optim.SGD(ref_params, lr, momentum=0.9)
    opt = torch.optim.SGD(params, lr, momentum=0.9)
    ref_probs, state = None, ETAState()
    selected = []
    for x in batches:
        ref_logits, ref_probs, ids1, ids2 = ref_forward_and_adapt(
            x, ref_model, ref_opt, fishers, e_margin, ref_probs, fisher_alpha, d_margin)
        if fisher is None:
            out = eta_step(model, x, opt, state, d_margin=d_margin, margin_factor=MARGIN_FACTOR)
        else:
            out = eata_step(model, x, opt, state, fisher, d_margin=d_margin, margin_factor=MARGIN_FACTOR)
        torch.testing.assert_close(out.logits, ref_logits.detach(), rtol=0, atol=1e-10)
        assert torch.equal(out.diagnostics["mask_1"].nonzero().squeeze(1), ids1)
        assert torch.equal(out.diagnostics["mask_2"].nonzero().squeeze(1), ids2)
        assert (state.probs is None) == (ref_probs is None)
        if ref_probs is not None:
            torch.testing.assert_close(state.probs, ref_probs, rtol=0, atol=1e-12)
        assert_params_equal(ref_model, model)
        selected.append((out.diagnostics["selected_1"], out.diagnostics["selected_2"]))
    assert state.num_reliable == sum(a for a, _ in selected) and state.num_selected == sum(b for _, b in selected)
    return selected, model


@pytest.mark.realdata
def test_eta_matches_reference_over_steps(cifar10_test, resnet20_checkpoint):
    batches = noisy_batches(cifar10_test, n_batches=4, batch_size=48)
    selected, _ = _run_both(cifar10_test, resnet20_checkpoint, batches, d_margin=0.4)
    assert selected[0][0] == selected[0][1] > 0  # no redundancy filter before m exists
    assert any(0 < n2 < n1 for n1, n2 in selected[1:])  # later the redundancy filter bites


@pytest.mark.realdata
def test_eata_fisher_and_steps_match_reference(cifar10_test, resnet20_checkpoint):
    batches = noisy_batches(cifar10_test, n_batches=3, batch_size=48)
    _, eata_model = _run_both(cifar10_test, resnet20_checkpoint, batches, d_margin=0.4, fisher_alpha=2000.0)
    _, eta_model = _run_both(cifar10_test, resnet20_checkpoint, batches, d_margin=0.4)
    diff = max(float((p - q).detach().abs().max()) for p, q in zip(eata_model.parameters(), eta_model.parameters()))
    assert diff > 1e-8  # the Fisher term changes the update


@pytest.mark.realdata
def test_eta_batch_size_one_matches_reference(cifar10_test, resnet20_checkpoint):
    batches = noisy_batches(cifar10_test, n_batches=2, batch_size=1, sigma=0.02)
    _run_both(cifar10_test, resnet20_checkpoint, batches, d_margin=0.4)


def test_eata_refuses_without_source():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.BatchNorm1d(10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TTAError, match="EATA needs source data.*ETA"):
        eata_step(model, torch.randn(4, 3, 2, 2), opt, ETAState(), None, d_margin=0.4, margin_factor=0.4)
    with pytest.raises(TTAError, match="empty.*ETA"):
        compute_fisher(model, list(model.parameters()), torch.zeros(0, 3, 2, 2), alpha=1.0, num_samples=2000,
                       batch_size=64)


def test_fisher_is_mean_of_squared_batch_gradients():
    """Closed form on a linear model: F = mean over batches of (∂ mean-CE / ∂θ)²."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 3).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    reg = compute_fisher(lin, [lin.weight], x, alpha=2000.0, num_samples=10, batch_size=4,
                         generator=torch.Generator().manual_seed(1))  # batches 4, 4, 2 of a shuffle
    expected = torch.zeros_like(lin.weight)
    for xb in x[torch.randperm(10, generator=torch.Generator().manual_seed(1))].split(4):
        z = xb @ lin.weight.T + lin.bias
        p = z.softmax(1)
        onehot = F.one_hot(z.argmax(1), 3).double()
        expected += (((p - onehot).T @ xb) / xb.shape[0]) ** 2
    torch.testing.assert_close(reg.fisher[0], expected / 3)
    with torch.no_grad():
        lin.weight.add_(0.5)
    torch.testing.assert_close(reg(), 2000.0 * (reg.fisher[0] * 0.25).sum())


def test_eta_collapse_is_flagged_not_raised():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = ETAState(probs=torch.full((10,), 0.1))
    before = [p.detach().clone() for p in model.parameters()]
    out = eta_step(model, torch.full((4, 3, 2, 2), float("inf")), opt, state, d_margin=0.4, margin_factor=0.4)
    assert out.collapsed and not out.updated
    assert torch.equal(state.probs, torch.full((10,), 0.1))
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


def test_fisher_regularizer_state_dict_holds_constants():
    p = nn.Parameter(torch.ones(3))
    reg = FisherRegularizer([p], [torch.full((3,), 2.0)], [torch.zeros(3)], alpha=0.5)
    assert float(reg().detach()) == pytest.approx(0.5 * 2.0 * 3)
    sd = reg.state_dict()
    assert sd["alpha"] == 0.5 and torch.equal(sd["fisher"][0], torch.full((3,), 2.0))
    again = FisherRegularizer.from_state_dict([p], sd)
    assert float(again().detach()) == float(reg().detach())
    with pytest.raises(TTAError, match="Fisher does not match"):
        FisherRegularizer.from_state_dict([nn.Parameter(torch.ones(4))], sd)
