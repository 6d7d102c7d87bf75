"""RDumb's step against an independent transcription of oripress/CCC models/rdumb.py on real
CIFAR-10 images through ResNet-20 (reset period shortened so resets happen), and its schedule."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from entropy_batch import assert_params_equal, noisy_batches, registered_parameters, twin_models
from tta.methods import method_defaults
from tta.methods.rdumb import RDumbState, rdumb_step

#: the entropy filter ``tta.adapt(model, "rdumb", dataset="cifar10")`` resolves
MARGIN_FACTOR = method_defaults("rdumb", "cifar10")["margin_factor"]


# ---- transcription of the reference (CCC models/rdumb.py), kept plain on purpose --------------------
class RefRDumb:
    def __init__(self, model, reset_every):  # CCC hard-codes 1000
        self.model, self.reset_every = model, reset_every
        self.e_margin, self.d_margin = math.log(10) * 0.4, 0.4
        self.current_model_probs = None
        params = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d)
                  for n, p in m.named_parameters() if n in ("weight", "bias")]
        self.optimizer = torch.optim.SGD(params, 0.00025 * 4, momentum=0.9)
        self.model_state = copy.deepcopy(model.state_dict())
        self.optimizer_state = copy.deepcopy(self.optimizer.state_dict())
        self.total_steps = 0

    def update_model_probs(self, current, new):
        if current is None:
            return None if new.size(0) == 0 else new.mean(0).detach()
        return current if new.size(0) == 0 else (0.9 * current + (1 - 0.9) * new.mean(0)).detach()

    def forward(self, x):
        if self.total_steps % self.reset_every == 0:
            self.model.load_state_dict(self.model_state, strict=True)
            self.optimizer.load_state_dict(self.optimizer_state)
            self.current_model_probs = None
        outputs = self.model(x)
        entropys = -(outputs.softmax(1) * outputs.log_softmax(1)).sum(1)
        filter_ids_1 = torch.where(entropys < self.e_margin)
        ids1 = filter_ids_1
        ids2 = torch.where(ids1[0] > -0.1)
        entropys = entropys[filter_ids_1]
        if self.current_model_probs is not None:
            cos = F.cosine_similarity(self.current_model_probs.unsqueeze(dim=0),
                                      outputs[filter_ids_1].softmax(1).detach(), dim=1)
            filter_ids_2 = torch.where(torch.abs(cos) < self.d_margin)
            entropys = entropys[filter_ids_2]
            ids2 = filter_ids_2
            updated = self.update_model_probs(self.current_model_probs,
                                              outputs[filter_ids_1][filter_ids_2].softmax(1).detach())
        else:
            updated = self.update_model_probs(self.current_model_probs, outputs[filter_ids_1].softmax(1))
        coeff = 1 / (torch.exp(entropys.clone().detach() - self.e_margin))
        loss = entropys.mul(coeff).mean(0)
        if x[ids1][ids2].size(0) != 0:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.current_model_probs = updated
        self.total_steps += 1
        return outputs
# -------------------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("batch_size", [32, 1])
def test_rdumb_matches_reference_with_resets(cifar10_test, resnet20_checkpoint, batch_size):
    ref_model, model = twin_models(resnet20_checkpoint)
    ref = RefRDumb(ref_model, reset_every=2)
    opt = torch.optim.SGD([p for _, p in registered_parameters(model, "rdumb", resnet20_checkpoint)], 0.00025 * 4,
                          momentum=0.9)
    init_model, init_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())

    def restore():
        model.load_state_dict(init_model)
        opt.load_state_dict(init_opt)

    state = RDumbState()
    resets = []
    for x in noisy_batches(cifar10_test, n_batches=5, batch_size=batch_size):
        ref_logits = ref.forward(x)
        out = rdumb_step(model, x, opt, state, restore=restore, reset_every=2, d_margin=0.4,
                         margin_factor=MARGIN_FACTOR)
        resets.append(out.reset)
        torch.testing.assert_close(out.logits, ref_logits.detach(), rtol=0, atol=1e-10)
        assert_params_equal(ref_model, model)
        assert (state.eta.probs is None) == (ref.current_model_probs is None)
        if state.eta.probs is not None:
            torch.testing.assert_close(state.eta.probs, ref.current_model_probs, rtol=0, atol=1e-12)
    assert resets == [False, False, True, False, True] and state.steps == ref.total_steps == 5


def test_rdumb_resets_every_1000_batches_counting_all_batches():
    """Resets fire before batch 1000 and 2000 (0-based), whether or not batches updated, and clear m.
    At the reference CIFAR-C protocol (750 batches) this never happens."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.BatchNorm1d(10))
    model[2].bias.data[3] = 30.0  # confident predictions: both samples pass the entropy filter
    opt = torch.optim.SGD(model[2].parameters(), lr=0.0)
    state, calls = RDumbState(), []
    x = torch.randn(2, 3, 2, 2)
    for t in range(2001):
        out = rdumb_step(model, x, opt, state, restore=lambda t=t: calls.append(t), d_margin=0.05,
                         margin_factor=MARGIN_FACTOR, reset_every=method_defaults("rdumb", "cifar10")["reset_every"])
        # the same batch again is redundant (cos = 1) unless m was just cleared by a reset
        assert out.diagnostics["selected_1"] == 2
        assert out.diagnostics["selected_2"] == (2 if t in (0, 1000, 2000) else 0)
    assert calls == [1000, 2000] and state.steps == 2001


def test_rdumb_state_round_trips():
    state = RDumbState()
    state.steps, state.eta.probs, state.eta.num_reliable = 17, torch.full((10,), 0.1), 5
    other = RDumbState()
    other.load_state_dict(copy.deepcopy(state.state_dict()))
    assert other.steps == 17 and other.eta.num_reliable == 5 and torch.equal(other.eta.probs, state.eta.probs)
