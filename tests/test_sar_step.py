"""SAR's one-step function and the SAM optimizer, against an independent transcription of
mr-eggplant/SAR (sar.py, sam.py) on real CIFAR-10 images through ResNet-20, and closed forms."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from entropy_batch import assert_params_equal, noisy_batches, twin_models
from tta.errors import TTAError
from tta.methods import method_defaults
from tta.methods.sar import SARState, make_sar_optimizer, sar_lr, sar_parameters, sar_step
from tta.optim import SAM

#: the options ``tta.adapt(model, "sar", dataset="cifar10")`` resolves, which the step functions take
OPTS = method_defaults("sar", "cifar10")


def sam(params, lr):
    return make_sar_optimizer(params, lr, momentum=OPTS["momentum"], rho=OPTS["rho"])


def step(model, x, opt, state, **kw):
    defaults = {k: OPTS[k] for k in ("margin_factor", "reset_threshold", "keep_ema_after_reset")}
    return sar_step(model, x, opt, state, **{**defaults, **kw})


# ---- transcription of the reference (SAR sam.py / sar.py), kept plain on purpose ----------------
class RefSAM(torch.optim.Optimizer):
    def __init__(self, params, base_optimizer, rho=0.05, **kwargs):
        super().__init__(params, dict(rho=rho, adaptive=False, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self):
        grad_norm = torch.norm(torch.stack([p.grad.norm(p=2) for g in self.param_groups for p in g["params"]
                                            if p.grad is not None]), p=2)
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.data.clone()
                p.add_(p.grad * scale.to(p))
        self.zero_grad()

    @torch.no_grad()
    def second_step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.data = self.state[p]["old_p"]
        self.base_optimizer.step()
        self.zero_grad()

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.base_optimizer.param_groups = self.param_groups


def ref_entropy(x):
    return -(x.softmax(1) * x.log_softmax(1)).sum(1)


def ref_collect_params(model):
    params = []
    for nm, m in model.named_modules():
        if any(s in nm for s in ("layer4", "blocks.9", "blocks.10", "blocks.11", "norm.")) or nm == "norm":
            continue
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            params += [p for n, p in m.named_parameters() if n in ("weight", "bias")]
    return params


def ref_forward_and_adapt(x, model, optimizer, margin, reset_constant, ema):
    optimizer.zero_grad()
    outputs = model(x)
    entropys = ref_entropy(outputs)
    filter_ids_1 = torch.where(entropys < margin)
    loss = entropys[filter_ids_1].mean(0)
    loss.backward()
    optimizer.first_step()
    entropys2 = ref_entropy(model(x))[filter_ids_1]
    filter_ids_2 = torch.where(entropys2 < margin)
    loss_second = entropys2[filter_ids_2].mean(0)
    if not math.isnan(loss_second.item()):
        ema = loss_second.item() if ema is None else 0.9 * ema + (1 - 0.9) * loss_second.item()
    loss_second.backward()
    optimizer.second_step()
    reset_flag = ema is not None and ema < reset_constant  # the reference hard-codes 0.2
    return outputs, ema, reset_flag, filter_ids_1[0], filter_ids_1[0][filter_ids_2[0]]


class RefSAR:
    """SAR.forward; ``slip`` keeps the reference's line order (ema re-assigned after reset)."""

    def __init__(self, model, optimizer, margin, reset_constant, slip):
        self.model, self.optimizer, self.margin, self.reset_constant, self.slip = (
            model, optimizer, margin, reset_constant, slip)
        self.ema = None
        self.model_state = copy.deepcopy(model.state_dict())
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())

    def forward(self, x):
        outputs, ema, reset_flag, ids1, ids2 = ref_forward_and_adapt(
            x, self.model, self.optimizer, self.margin, self.reset_constant, self.ema)
        if reset_flag:
            self.model.load_state_dict(self.model_state, strict=True)
            self.optimizer.load_state_dict(self.optimizer_state)
            self.ema = None
        if self.slip or not reset_flag:
            self.ema = ema
        return outputs, ids1, ids2, reset_flag
# -------------------------------------------------------------------------------------------------


def _run_both(checkpoint, batches, *, reset_constant, slip, lr=1e-3, atol=1e-10):
    ref_model, model = twin_models(checkpoint, batches[0].dtype)
    ref_opt = RefSAM(ref_collect_params(ref_model), torch.optim.SGD, lr=lr, momentum=0.9)
    ref = RefSAR(ref_model, ref_opt, 0.4 * math.log(10), reset_constant, slip)

    params = [p for _, p in sar_parameters(model)]
    opt = sam(params, lr)
    initial = copy.deepcopy(model.state_dict())
    state = SARState()
    resets = 0
    for x in batches:
        ref_logits, ids1, ids2, ref_reset = ref.forward(x)
        out = step(model, x, opt, state, restore=lambda: model.load_state_dict(initial),
                       reset_threshold=reset_constant, keep_ema_after_reset=slip)
        torch.testing.assert_close(out.logits, ref_logits.detach(), rtol=0, atol=atol)
        assert torch.equal(out.diagnostics["mask_1"].nonzero().squeeze(1), ids1)
        assert torch.equal(out.diagnostics["mask_2"].nonzero().squeeze(1), ids2)
        assert out.reset == ref_reset
        assert (state.ema is None) == (ref.ema is None)
        if state.ema is not None:
            assert state.ema == pytest.approx(ref.ema, rel=atol * 100)
        assert_params_equal(ref_model, model, atol)
        ref_moms = [ref_opt.base_optimizer.state[p]["momentum_buffer"] for p in ref_collect_params(ref_model)]
        moms = [opt.base_optimizer.state[p]["momentum_buffer"] for p in params]
        for a, b in zip(ref_moms, moms):
            torch.testing.assert_close(b, a, rtol=0, atol=atol)
        resets += out.reset
    return resets


@pytest.mark.realdata
def test_sar_matches_reference_over_steps(cifar10_test, resnet20_checkpoint):
    batches = noisy_batches(cifar10_test, n_batches=3, batch_size=48)
    resets = _run_both(resnet20_checkpoint, batches, reset_constant=0.2, slip=False)
    assert resets == 0  # e_m = 0.2 is not reached in 3 noisy batches: pure SAM steps


@pytest.mark.realdata
def test_sar_matches_reference_in_float32(cifar10_test, resnet20_checkpoint):
    """The precision runs use: the same selections, and values equal to float32 rounding."""
    batches = noisy_batches(cifar10_test, n_batches=2, batch_size=48, dtype=torch.float32)
    _run_both(resnet20_checkpoint, batches, reset_constant=0.2, slip=False, atol=1e-5)


@pytest.mark.realdata
@pytest.mark.parametrize("slip", [False, True])
def test_sar_recovery_matches_reference(cifar10_test, resnet20_checkpoint, slip):
    """A threshold above every ema forces the recovery on each step: the model is restored,
    SGD momentum survives (the reference SAM's state_dict does not hold it), and ema is
    cleared (intended) or kept (the reference's line order)."""
    batches = noisy_batches(cifar10_test, n_batches=3, batch_size=32, seed=1)
    assert _run_both(resnet20_checkpoint, batches, reset_constant=10.0, slip=slip) == 3


@pytest.mark.realdata
def test_sar_filters_are_nontrivial(cifar10_test, resnet20_checkpoint):
    """The real batch exercises both filters (otherwise the equality above would prove less)."""
    _, model = twin_models(resnet20_checkpoint)
    x = noisy_batches(cifar10_test, n_batches=1, batch_size=64)[0]
    opt = sam([p for _, p in sar_parameters(model)], 1e-3)
    out = step(model, x, opt, SARState(), restore=lambda: None)
    assert 0 < out.diagnostics["selected_2"] <= out.diagnostics["selected_1"] < 64


def test_sar_parameters_skip_top_layers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer3 = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
            self.layer4 = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
            self.norm = nn.LayerNorm(4)
            self.gn = nn.GroupNorm(2, 4)
            self.bn1d = nn.BatchNorm1d(4)

    names = [n for n, _ in sar_parameters(Net())]
    assert names == ["layer3.1.weight", "layer3.1.bias", "gn.weight", "gn.bias"]


def test_sar_empty_selection_still_moves_with_momentum():
    """An all-unreliable batch gives zero gradients; momentum from earlier steps still moves θ
    (as in the reference, which does not skip the step)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    model[0].requires_grad_(False)
    model[4].requires_grad_(False)
    params = [p for _, p in sar_parameters(model)]
    opt = sam(params, 0.1)
    state = SARState()
    x = torch.randn(8, 3, 6, 6)
    model[4].weight.data.mul_(20)  # confident predictions: a real first step
    step(model, x, opt, state, restore=lambda: None, reset_threshold=-1)
    model[4].weight.data.zero_()  # uniform predictions: entropy ln 10 > E0, nothing selected
    before = [p.detach().clone() for p in params]
    out = step(model, x, opt, state, restore=lambda: None, reset_threshold=-1)
    assert out.diagnostics["selected_1"] == 0 and math.isnan(out.loss)
    bufs = [opt.base_optimizer.state[p]["momentum_buffer"] for p in params]
    for p, b, mom in zip(params, before, bufs):
        torch.testing.assert_close(p.detach(), b - 0.1 * mom)  # grad 0: θ -= lr · 0.9 · buf_prev = lr · buf


def test_sar_collapse_is_flagged_not_raised():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.LayerNorm(10))
    opt = sam([p for _, p in sar_parameters(model)], 1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.full((4, 3, 2, 2), float("nan"))
    out = step(model, x, opt, SARState(), restore=lambda: None)
    assert out.collapsed and not out.updated
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


def test_sar_collapse_at_the_perturbed_point_restores_parameters():
    """Finite first forward, NaN second forward (at θ + ε): θ is restored, no base step."""
    class NaNOnSecondCall(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.LayerNorm(10))
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            z = self.body(x) * 10
            return z * float("nan") if self.calls == 2 else z

    torch.manual_seed(0)
    model = NaNOnSecondCall()
    opt = sam([p for _, p in sar_parameters(model)], 0.1)
    before = [p.detach().clone() for p in model.parameters()]
    out = step(model, torch.randn(8, 3, 2, 2), opt, SARState(), restore=lambda: None)
    assert model.calls == 2 and out.collapsed and not out.updated and out.diagnostics["selected_1"] > 0
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


@pytest.mark.realdata
def test_sar_batch_size_one_matches_reference(cifar10_test, resnet20_checkpoint):
    """B = 1 runs as the reference does: batch statistics over one image's pixels. On ResNet-20
    those predictions are near-uniform (entropy > E0), so nothing is selected and the
    parameters stay put; the equality covers that path."""
    batches = noisy_batches(cifar10_test, n_batches=2, batch_size=1, sigma=0.02)
    assert _run_both(resnet20_checkpoint, batches, reset_constant=0.2, slip=False) == 0


def test_sar_lr_follows_reference_scaling():
    assert sar_lr(64) == 2.5e-4 and sar_lr(32) == 2.5e-4
    assert sar_lr(16) == pytest.approx(2.5e-4 / 64 * 16 * 2)
    assert sar_lr(1) == pytest.approx(2 * 2.5e-4 / 64 * 2)
    assert sar_lr(64, vit=True) == pytest.approx(1e-3)
    with pytest.raises(TTAError, match="SAR"):
        sar_lr(0)


@pytest.mark.parametrize("method", ["sar", "deyo"])
def test_imagenet_lr_default_follows_the_run_batch_size(method):
    """SAR's and DeYO's ImageNet scripts scale the learning rate below batch 32: the resolved
    default follows the batch size the run gives (tta's ImageNet-C batch is 16); CIFAR keeps its
    fixed 1e-3 and an explicit lr wins."""
    import tta
    from tta.methods import get_method

    recipe = get_method(method)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    model(torch.rand(2, 3, 8, 8))
    for batch, want in ((16, 2.5e-4 / 64 * 16 * 2), (1, 2 * 2.5e-4 / 64 * 2), (64, 2.5e-4), (None, 2.5e-4)):
        assert recipe.defaults("imagenet", "continual", batch)["lr"] == pytest.approx(want), batch
        adapted = tta.adapt(model, method, dataset="imagenet", run_batch_size=batch)
        assert adapted.hparams()["lr"] == pytest.approx(want)
        assert adapted.optimizer.param_groups[0]["lr"] == pytest.approx(want)
    assert recipe.defaults("cifar10", "continual", 16)["lr"] == 1e-3
    assert tta.adapt(model, method, dataset="imagenet", run_batch_size=16, lr=1e-2).hparams()["lr"] == 1e-2
    assert any("else 2.5e-4*B/32" in line for line in recipe.options.describe())


def test_sar_refuses_plain_optimizer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.LayerNorm(10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TTAError, match="SAM"):
        step(model, torch.randn(2, 3, 2, 2), opt, SARState(), restore=lambda: None)


# ---- SAM closed forms ----------------------------------------------------------------------------
def _quadratic_setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))
    b = nn.Parameter(torch.randn(3, 2, generator=g, dtype=torch.float64))
    target = torch.randn(5, generator=g, dtype=torch.float64)

    def loss(ps=None):
        pa, pb = ps or (a, b)
        return ((pa - target) ** 4).sum() + (pb.sin() ** 2).sum()
    return [a, b], loss


def test_sam_rho_zero_is_plain_sgd():
    params, loss = _quadratic_setup()
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    sam = SAM(params, torch.optim.SGD, rho=0.0, lr=0.05, momentum=0.9)
    sgd = torch.optim.SGD(twins, lr=0.05, momentum=0.9)
    for _ in range(5):
        sam.zero_grad()
        loss().backward()
        sam.first_step(zero_grad=True)
        loss().backward()
        sam.second_step(zero_grad=True)
        sgd.zero_grad()
        loss(twins).backward()
        sgd.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_sam_first_step_moves_by_rho_along_the_gradient():
    params, loss = _quadratic_setup(1)
    sam = SAM(params, torch.optim.SGD, rho=0.05, lr=0.1)
    loss().backward()
    grads = [p.grad.clone() for p in params]
    before = [p.detach().clone() for p in params]
    sam.first_step()
    steps = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before)])
    g = torch.cat([x.flatten() for x in grads])
    torch.testing.assert_close(steps.norm(), torch.tensor(0.05, dtype=torch.float64))
    torch.testing.assert_close(steps, 0.05 * g / g.norm())


def test_sam_state_dict_round_trips_with_momentum():
    params, loss = _quadratic_setup(2)
    sam = SAM(params, torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9)

    def sam_step(opt):
        opt.zero_grad()
        loss().backward()
        opt.first_step(zero_grad=True)
        loss().backward()
        opt.second_step(zero_grad=True)

    for _ in range(3):
        sam_step(sam)
    saved_params = [p.detach().clone() for p in params]
    saved = copy.deepcopy(sam.state_dict())
    sam_step(sam)
    expected = [p.detach().clone() for p in params]

    with torch.no_grad():
        for p, s in zip(params, saved_params):
            p.copy_(s)
    fresh = SAM(params, torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9)
    fresh.load_state_dict(saved)
    assert fresh.base_optimizer.param_groups is fresh.param_groups
    sam_step(fresh)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=0)


def test_sam_step_needs_closure():
    params, _ = _quadratic_setup()
    with pytest.raises(TTAError, match="closure"):
        SAM(params, torch.optim.SGD, lr=0.1).step()
    with pytest.raises(TTAError, match="rho"):
        SAM(params, torch.optim.SGD, rho=-1.0, lr=0.1)
