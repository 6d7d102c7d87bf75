"""NOTE's parts against an independent transcription of the devavratTomar/unmixtns port.

The reference below is written from ``methods/note.py`` of that repository (IABN,
``convert_iabn``, PBRS, HLoss, ``forward_and_adapt``/``update_model``) with plain lists.
The official PBRS draws from Python's ``random``; the reference takes an injected object
with the same ``choice``/``randrange``/``uniform`` calls, backed by a torch.Generator, so
that both sides see the same random numbers.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tta
from tta.methods import get_stats, method_defaults
from tta.methods._sample_memory import PBRS
from tta.methods.iabn import InstanceAwareBatchNorm
from tta.methods.note import hloss, note_step

from conftest import to_tensor


def make_layer(bn, **options):
    """The layer the registered ``iabn`` policy puts in place of ``bn``, with its defaults unless overridden."""
    policy = get_stats("iabn")
    return policy.make_layer(bn, **{**policy.options.generic(), **options})


# ---------------------------------------------------------------------------------------------
# Reference transcription
# ---------------------------------------------------------------------------------------------
class RefIABN2d(nn.Module):
    def __init__(self, num_channels, k=3.0, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        self.num_channels, self.eps, self.k, self.affine = num_channels, eps, k, affine
        self._bn = nn.BatchNorm2d(num_channels, eps=eps, momentum=momentum, affine=affine)

    def _softshrink(self, x, lbd):
        return F.relu(x - lbd, inplace=True) - F.relu(-(x + lbd), inplace=True)

    def forward(self, x):
        b, c, h, w = x.size()
        sigma2, mu = torch.var_mean(x, dim=[2, 3], keepdim=True, unbiased=True)
        if self.training:
            _ = self._bn(x)
            sigma2_b, mu_b = torch.var_mean(x, dim=[0, 2, 3], keepdim=True, unbiased=True)
        else:
            mu_b = self._bn.running_mean.view(1, c, 1, 1)
            sigma2_b = self._bn.running_var.view(1, c, 1, 1)
        s_mu = torch.sqrt((sigma2_b + self.eps) / (h * w))
        s_sigma2 = (sigma2_b + self.eps) * np.sqrt(2 / (h * w - 1))
        mu_adj = mu_b + self._softshrink(mu - mu_b, self.k * s_mu)
        sigma2_adj = F.relu(sigma2_b + self._softshrink(sigma2 - sigma2_b, self.k * s_sigma2))
        x_n = (x - mu_adj) * torch.rsqrt(sigma2_adj + self.eps)
        return x_n * self._bn.weight.view(c, 1, 1) + self._bn.bias.view(c, 1, 1)


def ref_convert_iabn(module):
    out = module
    if isinstance(module, nn.BatchNorm2d):
        out = RefIABN2d(module.num_features, k=4, eps=module.eps, momentum=module.momentum, affine=module.affine)
        out._bn = copy.deepcopy(module)
    for name, child in module.named_children():
        out.add_module(name, ref_convert_iabn(child))
    return out


def ref_configure(model, alpha):
    model = ref_convert_iabn(model)
    for p in model.parameters():
        p.requires_grad = False
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.track_running_stats = True
            m.momentum = alpha
            m.weight.requires_grad_(True)
            m.bias.requires_grad_(True)
        if isinstance(m, RefIABN2d):
            for p in m.parameters():
                p.requires_grad = True
    return model


class TorchRandom:
    """Python-random-like draws backed by a torch.Generator (the injected randomness)."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def choice(self, seq):
        return seq[int(torch.randint(len(seq), (1,), generator=self.g))]

    def randrange(self, start, stop):
        return start + int(torch.randint(stop - start, (1,), generator=self.g))

    def uniform(self, a, b):
        return a + (b - a) * float(torch.rand((), dtype=torch.float64, generator=self.g))


class RefPBRS:
    def __init__(self, capacity, num_class, rng):
        self.num_class, self.capacity, self.rng = num_class, capacity, rng
        self.data = [[[], [], []] for _ in range(num_class)]
        self.counter = [0] * num_class

    def get_memory(self):
        out = [[], [], []]
        for feats, cls, dls in self.data:
            out[0].extend(feats)
            out[1].extend(cls)
            out[2].extend(dls)
        return out

    def occupancy_per_class(self):
        return [len(d[0]) for d in self.data]

    def add_instance(self, instance):
        cls = instance[1]
        self.counter[cls] += 1
        is_add = True
        if sum(self.occupancy_per_class()) >= self.capacity:
            is_add = self.remove_instance(cls)
        if is_add:
            for i, dim in enumerate(self.data[cls]):
                dim.append(instance[i])
        return is_add

    def remove_instance(self, cls):
        occ = self.occupancy_per_class()
        largest = [i for i, o in enumerate(occ) if o == max(occ)]
        if cls not in largest:
            big = self.rng.choice(largest)
            tgt = self.rng.randrange(0, len(self.data[big][0]))
            for dim in self.data[big]:
                dim.pop(tgt)
        else:
            m_c, n_c = occ[cls], self.counter[cls]
            u = self.rng.uniform(0, 1)
            if u <= m_c / n_c:
                tgt = self.rng.randrange(0, len(self.data[cls][0]))
                for dim in self.data[cls]:
                    dim.pop(tgt)
            else:
                return False
        return True


def ref_hloss(x):
    softmax = F.softmax(x / 1.0, dim=1)
    return (-softmax * torch.log(softmax + 1e-6)).mean()


class RefNOTE:
    def __init__(self, model, num_classes, rng, alpha=0.01, capacity=64, update_frequency=64, lr=1e-3):
        self.model = ref_configure(model, alpha)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.mem = RefPBRS(capacity, num_classes, rng)
        self.update_frequency = update_frequency
        self.current_instance = 0

    def forward(self, batch_data):
        with torch.no_grad():
            self.model.eval()
            out = self.model(batch_data)
            pseudo_label = torch.argmax(out, dim=1)
        for i, data in enumerate(batch_data):
            self.mem.add_instance([data, pseudo_label[i].item(), 0, 0, 0])
            self.current_instance += 1
            if self.current_instance % self.update_frequency == 0:
                self.update_model()
        return out

    def update_model(self):
        self.model.train()
        feats = torch.stack(self.mem.get_memory()[0])
        loss = ref_hloss(self.model(feats))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def noisy(cifar10_test):
    images, _ = cifar10_test
    x = to_tensor(images[240:480])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * 0.1
    return (x + noise).clamp(0, 1)


@pytest.fixture(scope="module")
def resnet20(resnet20_checkpoint):
    return tta.load_model("resnet20", checkpoint=resnet20_checkpoint)


def iabn_state(model):
    out = []
    for name, m in model.named_modules():
        if isinstance(m, InstanceAwareBatchNorm):
            out.append((name, m.weight, m.bias, m.running_mean, m.running_var))
        elif isinstance(m, RefIABN2d):
            out.append((name, m._bn.weight, m._bn.bias, m._bn.running_mean, m._bn.running_var))
    return out


def assert_same_iabn(ours, ref, atol):
    a, b = iabn_state(ours), iabn_state(ref)
    assert [n for n, *_ in a] == [n for n, *_ in b] and len(a) == 19
    for (name, *ta), (_, *tb) in zip(a, b):
        for x, y in zip(ta, tb):
            torch.testing.assert_close(x.detach(), y.detach(), atol=atol, rtol=atol, msg=name)


# ---------------------------------------------------------------------------------------------
def note_parts(model):
    """The parts ``tta.adapt`` builds for NOTE: the IABN student, memory, optimizer, trained parameters."""
    adapter = tta.adapt(model, "note", dataset="cifar10", channels_last=False)
    params = [p for group in adapter.optimizer.param_groups for p in group["params"]]
    return adapter.model, adapter.memory, adapter.optimizer, params


@pytest.mark.realdata
def test_iabn_matches_port_train_and_eval(resnet20, noisy):
    # float64 so that the batch-statistics gradients agree to 1e-9 (see test_rotta_parts)
    noisy = noisy.double()
    ours = note_parts(copy.deepcopy(resnet20).double())[0]
    ref = ref_configure(copy.deepcopy(resnet20).double(), 0.01)
    for i in range(3):
        x = noisy[32 * i : 32 * (i + 1)]
        ours.eval(), ref.eval()
        torch.testing.assert_close(ours(x), ref(x), atol=1e-10, rtol=1e-10)
        ours.train(), ref.train()
        out_o, out_r = ours(x), ref(x)
        torch.testing.assert_close(out_o, out_r, atol=1e-10, rtol=1e-10)
        out_o.square().mean().backward()
        out_r.square().mean().backward()
        for (n, w, b, *_), (_, wr, br, *_) in zip(iabn_state(ours), iabn_state(ref)):
            torch.testing.assert_close(w.grad, wr.grad, atol=1e-10, rtol=1e-8, msg=n)
            torch.testing.assert_close(b.grad, br.grad, atol=1e-10, rtol=1e-8, msg=n)
        assert_same_iabn(ours, ref, 1e-10)  # running statistics moved identically
    src = dict(resnet20.named_buffers())
    assert not torch.allclose(ours.bn1.running_mean.float(), src["bn1.running_mean"])


@pytest.mark.realdata
def test_iabn_closed_forms(resnet20, noisy):
    bn = resnet20.bn1
    z = resnet20.conv1(resnet20.normalize(noisy[:16])).detach().double()
    bn64 = copy.deepcopy(bn).double().eval()
    # a huge k shrinks every instance correction to zero: eval IABN is the source BN
    torch.testing.assert_close(make_layer(bn64, k=1e9).eval()(z), bn64(z), atol=1e-10, rtol=1e-10)
    # k = 0 keeps the instance statistics: instance normalization with the unbiased variance
    var_i, mean_i = torch.var_mean(z, dim=[2, 3], keepdim=True, correction=1)
    want = (z - mean_i) / torch.sqrt(var_i + bn.eps) * bn64.weight.view(1, -1, 1, 1) + bn64.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(make_layer(bn64, k=0.0).eval()(z), want, atol=1e-10, rtol=1e-10)
    # 1x1 maps (L = 1 <= skip threshold): the reference statistics alone (the port divides by zero)
    pooled = z.mean((2, 3), keepdim=True)
    torch.testing.assert_close(make_layer(bn64).eval()(pooled), bn64(pooled), atol=1e-10, rtol=1e-10)
    # BatchNorm1d stays a plain tracked BatchNorm1d with the NOTE momentum, as in the port
    layer = make_layer(nn.BatchNorm1d(8))
    assert type(layer) is nn.BatchNorm1d and layer.momentum == 0.01


def test_hloss_closed_form():
    z = torch.zeros(4, 10)
    assert float(hloss(z)) == pytest.approx(-(0.1 * np.log(0.1 + 1e-6)), rel=1e-6)
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(hloss(z), ref_hloss(z))


# ---------------------------------------------------------------------------------------------
def pbrs_contents(mem: PBRS):
    return mem.labels().tolist(), mem.get_memory()


@pytest.mark.realdata
@pytest.mark.parametrize("num_classes", [10, 100])
def test_pbrs_matches_port_with_same_draws(resnet20, noisy, num_classes):
    with torch.no_grad():
        labels = resnet20(noisy).argmax(1).tolist()
    gen = torch.Generator().manual_seed(5)
    # plus a skewed synthetic label stream, so that both eviction branches and rejections occur
    skew = torch.multinomial(torch.tensor([8.0, 4, 2, 1, 1, 1, 1, 0.5, 0.5, 0.5]), 400, True, generator=gen).tolist()
    seq = list(zip(range(240), labels)) + [(i % 240, y) for i, y in enumerate(skew)]
    ours, ref = PBRS(64, num_classes), RefPBRS(64, num_classes, TorchRandom(11))
    g = torch.Generator().manual_seed(11)
    outcomes = []
    for i, y in seq:
        got = ours.add(noisy[i], y, g)
        want = ref.add_instance([noisy[i], y, 0, 0, 0])
        outcomes.append(want)
        assert got == want
        data, cls, _ = ref.get_memory()
        assert ours.labels().tolist() == cls
        assert torch.equal(ours.get_memory(), torch.stack(data))
    assert ours.seen.tolist() == ref.counter
    assert len(ours) == 64 and outcomes.count(False) > 0


@pytest.mark.realdata
def test_pbrs_state_round_trip_and_reset(noisy):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(10, (150,), generator=g).tolist()
    a = PBRS(64, 10)
    for i in range(100):
        a.add(noisy[i], labels[i], g)
    b = PBRS(64, 10)
    b.set_state(a.get_state())
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for i in range(100, 150):
        a.add(noisy[i], labels[i], ga)
        b.add(noisy[i], labels[i], gb)
    assert a.labels().tolist() == b.labels().tolist() and torch.equal(a.get_memory(), b.get_memory())
    assert torch.equal(a.seen, b.seen)
    a.reset()
    assert len(a) == 0 and int(a.seen.sum()) == 0


# ---------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_note_step_matches_port_over_several_updates(resnet20, noisy):
    noisy = noisy.double()
    ref = RefNOTE(copy.deepcopy(resnet20).double(), 10, TorchRandom(7))
    model, memory, opt, params = note_parts(copy.deepcopy(resnet20).double())
    mem = memory.bank
    gen = torch.Generator().manual_seed(7)
    start = [p.clone() for p in params]
    for b in range(4):  # 160 samples, batch 40: updates at 64 and 128 fire mid-batch
        x = noisy[40 * b : 40 * (b + 1)]
        want = ref.forward(x)
        got = note_step(model, memory, opt, x, gen,
                        update_frequency=method_defaults("note", "cifar10")["update_frequency"]).logits
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
        assert mem.labels().tolist() == ref.mem.get_memory()[1]
        assert torch.equal(mem.get_memory(), torch.stack(ref.mem.get_memory()[0]))
        assert_same_iabn(model, ref.model, 1e-9)
    assert int(memory.seen) == 160
    assert max(float((p - s).detach().abs().max()) for p, s in zip(params, start)) > 1e-4
