"""``rotta`` through the registered adapter against an independent transcription of BIT-DA/RoTTA.

The reference (``RefRoTTA``, ``RefCSTU``, ``RefRobustBN2d``, ``ref_transform`` in
``test_rotta_parts``) is written from the official files with plain loops and lists and
draws its augmentation from torch's global generator; the adapter draws from its own
generator seeded with ``seed=``. Both run in float64 (the adapter's registered step,
``adapt_forward``, since ``forward`` admits float32 images only), so that agreement is to
1e-9 after several Adam steps. Fed the same noisy real CIFAR-10 batches through the
shared ResNet-20, outputs, RBN statistics, trained parameters, the teacher and the memory
(labels, order, ages, uncertainties, samples) agree over 240 samples: the memory fills,
evicts, and three updates fire, each mid-batch. The UnMix-TNS composition is checked the
same way with a transcription of the official UnMix-TNS layer put where the fork puts it.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tta
from conftest import to_tensor
from test_rotta_parts import RefCSTU, RefRoTTA, ref_transform

N_IMAGES, BATCH = 240, 48  # updates at 64, 128 and 192, each mid-batch


@pytest.fixture(scope="module")
def stream(cifar10_test):
    """240 real CIFAR-10 test images (every 31st, mixed classes) with Gaussian noise std 0.1."""
    images, _ = cifar10_test
    x = to_tensor(images[: 31 * N_IMAGES : 31])
    return (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)


@pytest.fixture(scope="module")
def resnet20(resnet20_checkpoint):
    return tta.load_model("resnet20", checkpoint=resnet20_checkpoint)


def ref_layer_stats(model):
    return [(m.weight, m.bias, m.source_mean, m.source_var) for m in model.modules() if hasattr(m, "source_mean")
            and not hasattr(m, "global_mean")]


def our_rbn_stats(model):
    return [(m.weight, m.bias, m.global_mean, m.global_var) for m in model.modules() if hasattr(m, "global_mean")]


def assert_close_lists(a, b, tol):
    assert len(a) == len(b) and a
    for ta, tb in zip(a, b):
        for u, v in zip(ta, tb):
            torch.testing.assert_close(u.detach(), v.detach(), atol=tol, rtol=tol)


def check_memory(adapter, ref):
    ours = adapter.memory.bank.items()
    theirs = ref.mem.contents()
    assert [(c, age) for c, _, age in ours] == [(c, age) for c, _, age in theirs]  # labels, order, ages
    assert [u for _, u, _ in ours] == pytest.approx([u for _, u, _ in theirs], abs=1e-9)
    torch.testing.assert_close(adapter.memory.bank.get_memory()[0], torch.stack(ref.mem.get_memory()[0]),
                               atol=0, rtol=0)


@pytest.mark.realdata
def test_rotta_adapter_equals_official_step_through_fill_eviction_and_updates(resnet20, stream):
    # float64: three+ Adam steps through 19 layers of batch-statistics gradients agree to 1e-9
    seed = 5
    x_all = stream.double()
    torch.manual_seed(seed)
    ref = RefRoTTA(copy.deepcopy(resnet20).double(), 10, ref_transform(32))
    adapter = tta.adapt(copy.deepcopy(resnet20).double(), "rotta", seed=seed, channels_last=False)
    start = [p.detach().clone() for p in adapter.optimizer.param_groups[0]["params"]]
    for b in range(math.ceil(N_IMAGES / BATCH)):
        x = x_all[BATCH * b : BATCH * (b + 1)]
        want = ref.forward(x)
        got = adapter.adapt_forward(x)  # the registered step; forward itself refuses float64 input
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)  # the teacher's pre-update logits
        check_memory(adapter, ref)
        assert_close_lists(our_rbn_stats(adapter.model), ref_layer_stats(ref.model), 1e-9)
        assert_close_lists(our_rbn_stats(adapter.teacher), ref_layer_stats(ref.model_ema), 1e-9)
    assert int(adapter.memory.seen) == ref.current_instance == N_IMAGES
    counts = adapter.memory.bank.counts()
    assert max(counts) == 7 and len(adapter.memory) < N_IMAGES  # classes at quota 6.4: eviction decided entries
    for p_t, p_r in zip(adapter.teacher.parameters(), ref.model_ema.parameters()):
        torch.testing.assert_close(p_t, p_r, atol=1e-9, rtol=1e-9)
    moved = max(float((p - s).detach().abs().max()) for p, s in zip(adapter.optimizer.param_groups[0]["params"], start))
    assert moved > 1e-4  # three Adam steps really moved gamma/beta
    assert adapter.hparams()["lr"] == 1e-3 and adapter.hparams()["stats"] == "rbn"


# ---------------------------------------------------------------------------------------------
# RoTTA over UnMix-TNS, as devavratTomar/unmixtns composes it
# ---------------------------------------------------------------------------------------------
class RefUnMixTNS2d(nn.Module):
    """Transcription of the official ``UnMixTNS2d`` forward, with the initial noise injected."""

    def __init__(self, bn, momentum, K, noise):
        super().__init__()
        self.momentum, self.K, self.eps = momentum, K, bn.eps
        coeff = 0.5
        self.running_means_mat = bn.running_mean.repeat(K, 1) + math.sqrt(coeff * K / (K - 1)) * \
            bn.running_var.repeat(K, 1).sqrt() * noise
        self.running_vars_mat = (1 - coeff) * bn.running_var.repeat(K, 1)
        self.weight, self.bias = copy.deepcopy(bn.weight), copy.deepcopy(bn.bias)

    def forward(self, x):
        inst_mean = torch.mean(x, dim=[2, 3])
        inst_var = torch.var(x, dim=[2, 3], unbiased=False)
        with torch.no_grad():
            sim = torch.einsum("bc,kc->bk", F.normalize(inst_mean, dim=1), F.normalize(self.running_means_mat, dim=1))
            probs = torch.softmax(sim / 0.07, dim=1)
        mean_mat = (1. - probs.unsqueeze(-1)) * self.running_means_mat.unsqueeze(0) + probs.unsqueeze(-1) * \
            inst_mean.unsqueeze(1)
        var_mat = (1. - probs.unsqueeze(-1)) * self.running_vars_mat.unsqueeze(0) + probs.unsqueeze(-1) * \
            inst_var.unsqueeze(1)
        mean = torch.mean(mean_mat, dim=1)
        var = torch.mean(var_mat, dim=1) + torch.mean(mean_mat**2, dim=1) - (torch.mean(mean_mat, dim=1))**2
        with torch.no_grad():
            diff_mean = inst_mean.unsqueeze(1) - self.running_means_mat.unsqueeze(0)
            self.running_means_mat = self.running_means_mat + self.momentum * torch.mean(
                probs.unsqueeze(-1) * diff_mean, dim=0)
            diff_var = inst_var.unsqueeze(1) - self.running_vars_mat.unsqueeze(0)
            self.running_vars_mat = self.running_vars_mat + self.momentum * torch.mean(
                probs.unsqueeze(-1) * diff_var, dim=0)
        b, c = mean.shape
        x = (x - mean.view(b, c, 1, 1)) / torch.sqrt(var.view(b, c, 1, 1) + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def ref_replace_bn_with_unmix(model, K, seed, momentum):
    """The fork's ``replace_bn_layers``, before the method is built; noise per layer in module order."""
    gen = torch.Generator().manual_seed(seed)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for name in names:
        parent = model
        *path, last = name.split(".")
        for p in path:
            parent = getattr(parent, p)
        bn = getattr(parent, last)
        noise = torch.randn(K, bn.num_features, generator=gen).to(bn.running_mean)
        setattr(parent, last, RefUnMixTNS2d(bn, momentum, K, noise))
    return model


class RefRoTTAOverUnMix(RefRoTTA):
    """RefRoTTA whose configure finds UnMix-TNS layers: their gamma, beta train (the fork's collect_params)."""

    def __init__(self, model, num_class, transform, nu=0.001, capacity=64, update_frequency=64, lr=1e-5):
        self.model = model
        params = [p.requires_grad_(True) for m in model.modules() if isinstance(m, RefUnMixTNS2d)
                  for p in (m.weight, m.bias)]
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.mem = RefCSTU(capacity, num_class)
        self.model_ema = copy.deepcopy(self.model)
        for param in self.model_ema.parameters():
            param.detach_()
        self.transform, self.nu, self.update_frequency = transform, nu, update_frequency
        self.current_instance = 0


def components(model):
    return [(m.running_means_mat, m.running_vars_mat) if isinstance(m, RefUnMixTNS2d) else (m.mu_k, m.var_k)
            for m in model.modules() if isinstance(m, RefUnMixTNS2d) or hasattr(m, "mu_k")]


@pytest.mark.realdata
def test_rotta_over_unmix_tns_equals_the_fork_composition(resnet20, stream):
    seed, K = 5, 4
    x_all = stream.double()
    model = copy.deepcopy(resnet20).double()
    ref_model = ref_replace_bn_with_unmix(copy.deepcopy(model).requires_grad_(False), K, seed=0, momentum=0.1)
    torch.manual_seed(seed)
    ref = RefRoTTAOverUnMix(ref_model, 10, ref_transform(32), lr=1e-5)
    adapter = tta.adapt(model, "rotta", stats="unmix-tns", dataset="cifar10", seed=seed, channels_last=False,
                        stats_options={"K": K, "seed": 0, "batch_size": 64})  # lam = 1 - 0.9^(64/64), as the fork's
    assert adapter.hparams()["lr"] == 1e-5 and adapter.hparams()["optimizer"] == "adam"  # the fork's run.sh
    assert not any(hasattr(m, "global_mean") for m in adapter.model.modules())  # no RBN inserted
    for b in range(4):  # 192 samples: three updates, two mid-batch
        x = x_all[BATCH * b : BATCH * (b + 1)]
        want = ref.forward(x)
        got = adapter.adapt_forward(x)  # the registered step; forward itself refuses float64 input
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
        check_memory(adapter, ref)
        assert_close_lists(components(adapter.model), components(ref.model), 1e-9)  # student: augmented memory only
        assert_close_lists(components(adapter.teacher), components(ref.model_ema), 1e-9)  # teacher: its own
    for p_s, p_r in zip(adapter.model.parameters(), ref.model.parameters()):
        torch.testing.assert_close(p_s, p_r, atol=1e-9, rtol=1e-9)
    s, t = components(adapter.model), components(adapter.teacher)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(s, t))  # the two component sets really differ


@pytest.mark.realdata
def test_rotta_batch_of_one_fills_the_memory_and_reset_empties_it(resnet20, stream):
    adapter = tta.adapt(resnet20, "rotta")
    for i in range(3):
        assert torch.isfinite(adapter(stream[i : i + 1])).all()
    assert len(adapter.memory) == 3 and int(adapter.memory.seen) == 3
    adapter.reset()
    assert len(adapter.memory) == 0 and int(adapter.memory.seen) == 0


def test_rotta_refuses_non_square_images_before_changing_state():
    from test_methods_stats import tiny_net

    adapter = tta.adapt(tiny_net(), "rotta")
    with pytest.raises(tta.errors.InputError, match="square RGB"):
        adapter(torch.rand(4, 3, 8, 10))
    assert len(adapter.memory) == 0 and int(adapter.memory.seen) == 0


def test_rbn_is_a_statistics_policy_and_a_method():
    from test_methods_stats import tiny_net

    net, x = tiny_net(), torch.rand(6, 3, 8, 8)
    a = tta.adapt(net, "rbn", alpha=0.5)
    out = a(x)
    bn = net[1]
    with torch.no_grad():  # first forward: statistics (1 - alpha) source + alpha batch, then normalized with them
        h = net[0](x)
        mean = 0.5 * bn.running_mean + 0.5 * h.mean((0, 2, 3))
        var = 0.5 * bn.running_var + 0.5 * h.var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(a.model[1].global_mean, mean)
    torch.testing.assert_close(a.model[1].global_var, var)
    assert out.shape == (6, 3)
    t = tta.adapt(net, "tent", stats="rbn")
    assert all(m.training for m in t.model.modules() if hasattr(m, "global_mean"))
