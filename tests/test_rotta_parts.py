"""RoTTA's parts against an independent transcription of BIT-DA/RoTTA, on real CIFAR-10 images.

The reference classes below are written from the official files (``core/utils/bn_layers.py``,
``core/utils/memory.py``, ``core/utils/custom_transforms.py``, ``core/adapter/rotta.py``) with
plain loops and lists; nothing is imported from tta's implementation of them. Random draws:
the reference uses torch's global generator (as the official code does), tta a
``torch.Generator`` seeded the same way, so equal outputs also prove equal draw order.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch import nn

import tta
from tta.methods import get_stats, method_defaults
from tta.methods._sample_memory import CSTU, timeliness_weight
from tta.methods.rbn import RobustBatchNorm
from tta.methods.rotta import rotta_augment, rotta_step

from conftest import to_tensor


def make_layer(bn, **options):
    """The layer the registered ``rbn`` policy puts in place of ``bn``, with its defaults unless overridden."""
    policy = get_stats("rbn")
    return policy.make_layer(bn, **{**policy.options.generic(), **options})


# ---------------------------------------------------------------------------------------------
# Reference transcription of the official code
# ---------------------------------------------------------------------------------------------
class RefRobustBN2d(nn.Module):
    def __init__(self, bn, momentum):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("source_mean", copy.deepcopy(bn.running_mean))
        self.register_buffer("source_var", copy.deepcopy(bn.running_var))
        self.weight = copy.deepcopy(bn.weight)
        self.bias = copy.deepcopy(bn.bias)
        self.eps = bn.eps

    def forward(self, x):
        if self.training:
            b_var, b_mean = torch.var_mean(x, dim=[0, 2, 3], unbiased=False, keepdim=False)
            mean = (1 - self.momentum) * self.source_mean + self.momentum * b_mean
            var = (1 - self.momentum) * self.source_var + self.momentum * b_var
            self.source_mean, self.source_var = copy.deepcopy(mean.detach()), copy.deepcopy(var.detach())
            mean, var = mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)
        else:
            mean, var = self.source_mean.view(1, -1, 1, 1), self.source_var.view(1, -1, 1, 1)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def ref_configure(model, alpha=0.05):
    model.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for name in names:
        parent = model
        *path, last = name.split(".")
        for p in path:
            parent = getattr(parent, p)
        layer = RefRobustBN2d(getattr(parent, last), alpha)
        layer.requires_grad_(True)
        setattr(parent, last, layer)
    return model


class RefItem:
    def __init__(self, data, uncertainty, age):
        self.data, self.uncertainty, self.age = data, uncertainty, age


class RefCSTU:
    def __init__(self, capacity, num_class, lambda_t=1.0, lambda_u=1.0):
        self.capacity, self.num_class = capacity, num_class
        self.per_class = capacity / num_class
        self.lambda_t, self.lambda_u = lambda_t, lambda_u
        self.data = [[] for _ in range(num_class)]

    def get_occupancy(self):
        return sum(len(c) for c in self.data)

    def add_instance(self, x, prediction, uncertainty):
        new_score = self.heuristic_score(0, uncertainty)
        if self.remove_instance(prediction, new_score):
            self.data[prediction].append(RefItem(x, uncertainty, 0))
        for class_list in self.data:
            for item in class_list:
                item.age += 1

    def remove_instance(self, cls, score):
        if len(self.data[cls]) < self.per_class:
            if self.get_occupancy() < self.capacity:
                return True
            dist = [len(c) for c in self.data]
            majority = [i for i, o in enumerate(dist) if o == max(dist)]
            return self.remove_from_classes(majority, score)
        return self.remove_from_classes([cls], score)

    def remove_from_classes(self, classes, score_base):
        max_class = max_index = max_score = None
        for cls in classes:
            for idx, item in enumerate(self.data[cls]):
                score = self.heuristic_score(item.age, item.uncertainty)
                if max_score is None or score >= max_score:
                    max_score, max_index, max_class = score, idx, cls
        if max_class is not None:
            if max_score > score_base:
                self.data[max_class].pop(max_index)
                return True
            return False
        return True

    def heuristic_score(self, age, uncertainty):
        return self.lambda_t * 1 / (1 + math.exp(-age / self.capacity)) + self.lambda_u * uncertainty / math.log(
            self.num_class
        )

    def get_memory(self):
        data = [item.data for c in self.data for item in c]
        ages = [item.age / self.capacity for c in self.data for item in c]
        return data, ages

    def contents(self):
        return [(cls, item.uncertainty, item.age) for cls, c in enumerate(self.data) for item in c]


class RefColorJitterPro(T.ColorJitter):
    def __init__(self, brightness, contrast, saturation, hue, gamma):
        super().__init__(brightness, contrast, saturation, hue)
        self.gamma = self._check_input(gamma, "gamma")

    def forward(self, img):
        for fn_id in torch.randperm(5):
            if fn_id == 0:
                img = TF.adjust_brightness(img, torch.tensor(1.0).uniform_(*self.brightness).item())
            if fn_id == 1:
                img = TF.adjust_contrast(img, torch.tensor(1.0).uniform_(*self.contrast).item())
            if fn_id == 2:
                img = TF.adjust_saturation(img, torch.tensor(1.0).uniform_(*self.saturation).item())
            if fn_id == 3:
                img = TF.adjust_hue(img, torch.tensor(1.0).uniform_(*self.hue).item())
            if fn_id == 4:
                g = torch.tensor(1.0).uniform_(*self.gamma).item()
                img = TF.adjust_gamma(img.clamp(1e-8, 1.0), g)
        return img


def ref_transform(n_pixels, gaussian_std=0.005, soft=False):
    class Noise(nn.Module):
        def forward(self, img):
            return img + (torch.randn(img.size()) * gaussian_std + 0.0).to(img.device)

    return T.Compose([
        T.Lambda(lambda im: torch.clip(im, 0.0, 1.0)),
        RefColorJitterPro(
            brightness=[0.8, 1.2] if soft else [0.6, 1.4],
            contrast=[0.85, 1.15] if soft else [0.7, 1.3],
            saturation=[0.75, 1.25] if soft else [0.5, 1.5],
            hue=[-0.03, 0.03] if soft else [-0.06, 0.06],
            gamma=[0.85, 1.15] if soft else [0.7, 1.3],
        ),
        T.Pad(padding=int(n_pixels / 2), padding_mode="edge"),
        T.RandomAffine(
            degrees=[-8, 8] if soft else [-15, 15],
            translate=(1 / 16, 1 / 16),
            scale=(0.95, 1.05) if soft else (0.9, 1.1),
            shear=None,
            interpolation=T.InterpolationMode.BILINEAR,
        ),
        T.GaussianBlur(kernel_size=5, sigma=[0.001, 0.25] if soft else [0.001, 0.5]),
        T.CenterCrop(size=n_pixels),
        T.RandomHorizontalFlip(p=0.5),
        Noise(),
        T.Lambda(lambda im: torch.clip(im, 0.0, 1.0)),
    ])


class RefRoTTA:
    def __init__(self, model, num_class, transform, nu=0.001, capacity=64, update_frequency=64, lr=1e-3):
        self.model = ref_configure(model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.mem = RefCSTU(capacity, num_class)
        self.model_ema = copy.deepcopy(self.model)
        for param in self.model_ema.parameters():
            param.detach_()
        self.transform, self.nu, self.update_frequency = transform, nu, update_frequency
        self.current_instance = 0

    def forward(self, batch_data):
        with torch.no_grad():
            self.model.eval()
            self.model_ema.eval()
            ema_out = self.model_ema(batch_data)
            predict = torch.softmax(ema_out, dim=1)
            pseudo_label = torch.argmax(predict, dim=1)
            entropy = torch.sum(-predict * torch.log(predict + 1e-6), dim=1)
        for i, data in enumerate(batch_data):
            self.mem.add_instance(data, pseudo_label[i].item(), entropy[i].item())
            self.current_instance += 1
            if self.current_instance % self.update_frequency == 0:
                self.update_model()
        return ema_out

    def update_model(self):
        self.model.train()
        self.model_ema.train()
        sup_data, ages = self.mem.get_memory()
        if len(sup_data) > 0:
            sup_data = torch.stack(sup_data)
            strong_sup_aug = self.transform(sup_data)
            ema_sup_out = self.model_ema(sup_data)
            stu_sup_out = self.model(strong_sup_aug)
            ages = torch.tensor(ages).float()
            weight = torch.exp(-ages) / (1 + torch.exp(-ages))
            ce = -(ema_sup_out.softmax(1) * stu_sup_out.log_softmax(1)).sum(1)
            loss = (ce * weight).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        for ema_param, param in zip(self.model_ema.parameters(), self.model.parameters()):
            ema_param.data[:] = (1 - self.nu) * ema_param[:].data[:] + self.nu * param[:].data[:]


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def noisy(cifar10_test):
    """240 real CIFAR-10 test images with Gaussian noise (std 0.1), fixed seed."""
    images, _ = cifar10_test
    x = to_tensor(images[:240])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    return (x + noise).clamp(0, 1)


@pytest.fixture(scope="module")
def resnet20(resnet20_checkpoint):
    return tta.load_model("resnet20", checkpoint=resnet20_checkpoint)


def rbn_state(model):
    """(name, weight, bias, mean, var) of every RBN-like layer, in module order."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, RobustBatchNorm):
            out.append((name, m.weight, m.bias, m.global_mean, m.global_var))
        elif isinstance(m, RefRobustBN2d):
            out.append((name, m.weight, m.bias, m.source_mean, m.source_var))
    return out


def assert_same_rbn(ours, ref, atol=1e-5):
    a, b = rbn_state(ours), rbn_state(ref)
    assert [n for n, *_ in a] == [n for n, *_ in b] and a
    for (name, *ta), (_, *tb) in zip(a, b):
        for x, y in zip(ta, tb):
            torch.testing.assert_close(x.detach(), y.detach(), atol=atol, rtol=atol, msg=name)


# ---------------------------------------------------------------------------------------------
# RBN
# ---------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_rbn_matches_official_over_train_steps(resnet20, noisy):
    # float64: float32 rounding, amplified through 19 layers of batch-statistics gradients,
    # reaches 3e-4 relative in the gradients; in float64 the two agree to 1e-12
    ours = copy.deepcopy(resnet20).double().requires_grad_(False)
    tta.methods._bn_swap.replace_batchnorm(ours, make_layer, "rbn")  # new gamma/beta require grad
    ref = ref_configure(copy.deepcopy(resnet20).double())
    ours.train(), ref.train()
    noisy = noisy.double()
    for i in range(3):
        x = noisy[32 * i : 32 * (i + 1)]
        out_o, out_r = ours(x), ref(x)
        torch.testing.assert_close(out_o, out_r, atol=1e-10, rtol=1e-10)
        # gradients flow through the batch statistics as in the official layer
        (out_o.square().mean()).backward()
        (out_r.square().mean()).backward()
        go = [m.weight.grad for m in ours.modules() if isinstance(m, RobustBatchNorm)]
        gr = [m.weight.grad for m in ref.modules() if isinstance(m, RefRobustBN2d)]
        assert len(go) == len(gr) == 19
        for a, b in zip(go, gr):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
        assert_same_rbn(ours, ref, atol=1e-10)
    ours.eval(), ref.eval()
    before = [s[3].clone() for s in rbn_state(ours)]
    torch.testing.assert_close(ours(noisy[:32]), ref(noisy[:32]), atol=1e-10, rtol=1e-10)
    assert all(torch.equal(b, s[3]) for b, s in zip(before, rbn_state(ours)))  # eval changes nothing


@pytest.mark.realdata
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_rbn_outside_autograd_matches_official(resnet20, noisy, dtype, tol):
    """Without autograd (the ``rbn`` policy under inference_mode, RoTTA's teacher on its memory) RBN takes
    the fused BatchNorm pass, on channels_last as tta runs it; outputs and stored statistics stay official."""
    ours = copy.deepcopy(resnet20).to(dtype).requires_grad_(False)
    tta.methods._bn_swap.replace_batchnorm(ours, make_layer, "rbn")
    ours = ours.to(memory_format=torch.channels_last).train()
    ref = ref_configure(copy.deepcopy(resnet20).to(dtype)).train()
    for i in range(3):
        x = noisy[32 * i : 32 * (i + 1)].to(dtype)
        with torch.inference_mode():
            out_o = ours(x.contiguous(memory_format=torch.channels_last))
        with torch.no_grad():
            out_r = ref(x)
        torch.testing.assert_close(out_o, out_r, atol=tol, rtol=tol)
        assert_same_rbn(ours, ref, atol=tol)


@pytest.mark.realdata
def test_rbn_closed_forms(resnet20, noisy):
    bn = resnet20.bn1
    z = resnet20.conv1(resnet20.normalize(noisy[:64])).detach()
    frozen = make_layer(bn, alpha=0.0).train()
    torch.testing.assert_close(frozen(z), bn.eval()(z), atol=1e-5, rtol=1e-5)  # alpha 0: source BN
    batch = make_layer(bn, alpha=1.0).train()
    want = nn.functional.batch_norm(z, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    torch.testing.assert_close(batch(z), want, atol=1e-5, rtol=1e-5)  # alpha 1: batch statistics
    torch.testing.assert_close(batch.global_var, z.var((0, 2, 3), unbiased=False), atol=1e-6, rtol=1e-5)


def test_rbn_batchnorm1d_closed_form():
    g = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm1d(6)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(6, generator=g))
        bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(6, generator=g))
    z = torch.randn(16, 6, generator=g).double()
    layer = make_layer(bn.double(), alpha=0.05).train()
    mean = 0.95 * bn.running_mean + 0.05 * z.mean(0)
    var = 0.95 * bn.running_var + 0.05 * z.var(0, unbiased=False)
    want = (z - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(layer(z), want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(layer.global_mean, mean, atol=1e-12, rtol=1e-12)
    layer.reset_statistics()
    assert torch.equal(layer.global_var, bn.running_var)


# ---------------------------------------------------------------------------------------------
# CSTU
# ---------------------------------------------------------------------------------------------
def ours_contents(mem: CSTU):
    return mem.items()


def check_same_memory(ours: CSTU, ref: RefCSTU):
    assert ours_contents(ours) == ref.contents()
    data, ages = ours.get_memory()
    rdata, rages = ref.get_memory()
    if rdata:
        assert torch.equal(data, torch.stack(rdata))
        assert torch.equal(ages, torch.tensor(rages).float())
    else:
        assert len(data) == 0


@pytest.mark.realdata
@pytest.mark.parametrize("num_classes", [10, 100])
def test_cstu_matches_official_through_fill_and_eviction(resnet20, noisy, num_classes):
    with torch.no_grad():
        p = resnet20(noisy).softmax(1)
    labels = p.argmax(1).tolist()
    entropy = (-(p * torch.log(p + 1e-6)).sum(1)).tolist()
    gen = torch.Generator().manual_seed(1)
    # a second pass with few distinct uncertainties and labels spread over num_classes,
    # so that score ties (age and uncertainty equal) and every branch occur
    tie_unc = (torch.randint(3, (240,), generator=gen).double() * 0.25).tolist()
    tie_lab = torch.randint(min(num_classes, 12), (240,), generator=gen).tolist()
    seq = list(zip(range(240), labels, entropy)) + list(zip(range(240), tie_lab, tie_unc))
    ours, ref = CSTU(64, num_classes), RefCSTU(64, num_classes)
    accepted = rejected = 0
    for i, y, u in seq:
        ok = ours.add(noisy[i], y, u)
        accepted, rejected = accepted + ok, rejected + (not ok)
        ref.add_instance(noisy[i], y, u)
        check_same_memory(ours, ref)
    assert accepted > 64 and rejected > 0  # the bank filled, evicted and rejected
    if num_classes == 100:
        assert int(ours.class_counts().max()) == 1  # quota 0.64: at most one item per class


@pytest.mark.realdata
def test_cstu_state_round_trip(noisy):
    gen = torch.Generator().manual_seed(2)
    labels = torch.randint(10, (200,), generator=gen).tolist()
    unc = torch.rand(200, generator=gen).tolist()
    a = CSTU(64, 10)
    for i in range(120):
        a.add(noisy[i], labels[i], unc[i])
    b = CSTU(64, 10)
    b.set_state(a.get_state())
    for i in range(120, 200):
        a.add(noisy[i], labels[i], unc[i])
        b.add(noisy[i], labels[i], unc[i])
    assert ours_contents(a) == ours_contents(b)
    assert torch.equal(a.get_memory()[0], b.get_memory()[0])
    a.reset()
    assert len(a) == 0 and len(a.get_memory()[0]) == 0


def test_timeliness_weight_closed_form():
    ages = torch.tensor([0.0, 1.0, 64 / 64])
    torch.testing.assert_close(timeliness_weight(ages), torch.sigmoid(-ages))
    assert float(timeliness_weight(torch.tensor(0.0))) == 0.5


# ---------------------------------------------------------------------------------------------
# Strong augmentation
# ---------------------------------------------------------------------------------------------
@pytest.mark.realdata
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_augment_matches_official_transform(noisy, seed):
    x = noisy[:16]
    torch.manual_seed(seed)
    want = ref_transform(32)(x)
    after_ref = torch.rand(3)
    g = torch.Generator().manual_seed(seed)
    got = rotta_augment(x, g)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert torch.equal(torch.rand(3, generator=g), after_ref)  # same number of draws consumed
    assert not torch.allclose(got, x, atol=1e-3)


@pytest.mark.realdata
def test_augment_soft_and_imagenet_size(noisy):
    x = nn.functional.interpolate(noisy[:2], size=224, mode="bilinear", align_corners=False)
    torch.manual_seed(7)
    want = ref_transform(224, soft=True)(x)
    got = rotta_augment(x, torch.Generator().manual_seed(7), soft=True)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_augment_rejects_bad_shape():
    with pytest.raises(tta.errors.InputError, match="square RGB"):
        rotta_augment(torch.rand(2, 1, 32, 32), torch.Generator())


# ---------------------------------------------------------------------------------------------
# Full step
# ---------------------------------------------------------------------------------------------
def ours(model):
    """The parts ``tta.adapt`` builds for RoTTA: student, teacher, memory, optimizer, trained parameters."""
    adapter = tta.adapt(model, "rotta", dataset="cifar10", channels_last=False)
    params = [p for group in adapter.optimizer.param_groups for p in group["params"]]
    return adapter.model, adapter.teacher, adapter.memory, adapter.optimizer, params


def step(student, teacher, memory, opt, x, gen):
    """``rotta_step`` with the registered options; returns (logits, samples seen so far)."""
    opts = method_defaults("rotta", "cifar10")
    out = rotta_step(student, teacher, memory, opt, x, gen, update_frequency=opts["update_frequency"], nu=opts["nu"])
    return out.logits, int(memory.seen)


@pytest.mark.realdata
def test_rotta_step_matches_official_over_several_updates(resnet20, noisy):
    # float64 (as in the RBN test) so that three Adam steps agree to 1e-9
    seed = 3
    noisy = noisy.double()
    torch.manual_seed(seed)
    ref = RefRoTTA(copy.deepcopy(resnet20).double(), 10, ref_transform(32))
    student, teacher, memory, opt, params = ours(copy.deepcopy(resnet20).double())
    gen = torch.Generator().manual_seed(seed)
    mem = memory.bank
    start = [p.clone() for p in params]
    for b in range(5):  # 240 samples, batch 48: updates fire mid-batch at 64, 128, 192
        x = noisy[48 * b : 48 * (b + 1)]
        want = ref.forward(x)
        got, seen = step(student, teacher, memory, opt, x, gen)
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
        a, r = ours_contents(mem), ref.mem.contents()
        assert [(c, age) for c, _, age in a] == [(c, age) for c, _, age in r]  # labels, order, ages
        assert [u for _, u, _ in a] == pytest.approx([u for _, u, _ in r], abs=1e-9)
        torch.testing.assert_close(mem.get_memory()[0], torch.stack(ref.mem.get_memory()[0]), atol=0, rtol=0)
        assert_same_rbn(student, ref.model, atol=1e-9)
        assert_same_rbn(teacher, ref.model_ema, atol=1e-9)
    assert seen == ref.current_instance == 240
    moved = max(float((p - s).detach().abs().max()) for p, s in zip(params, start))
    assert moved > 1e-4  # three Adam steps moved gamma/beta
    for p_t, p_r in zip(teacher.parameters(), ref.model_ema.parameters()):
        torch.testing.assert_close(p_t, p_r, atol=1e-9, rtol=1e-9)


@pytest.mark.realdata
def test_rotta_step_batch_of_one_and_prediction_before_update(resnet20, noisy):
    student, teacher, memory, opt, params = ours(copy.deepcopy(resnet20))
    gen = torch.Generator().manual_seed(0)
    mem = memory.bank
    initial = [p.clone() for p in params]
    for i in range(63):
        _, seen = step(student, teacher, memory, opt, noisy[i : i + 1], gen)
    assert seen == 63 and len(mem) > 0
    assert all(torch.equal(p, s) for p, s in zip(params, initial))  # no update before 64 samples
    before = [p.clone() for p in params]
    x = noisy[63:64]
    with torch.no_grad():
        teacher.eval()
        expect = teacher(x)
    got, seen = step(student, teacher, memory, opt, x, gen)  # the 64th sample triggers an update
    assert torch.equal(got, expect)  # returned logits come from before the update
    assert any(not torch.equal(p, b) for p, b in zip(params, before))
