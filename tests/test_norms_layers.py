"""Each normalization layer against an independent computation written here."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tta.errors import InputError
from tta.norms.power_norm import _PowerFunction
from tta.norms import (
    NORMS, BatchChannelNorm2d, CRMSNorm, EstBN, GhostBatchNorm2d, LayerNorm2d, PowerNorm2d, RMSNorm, RMSNorm2d,
    ScaledStdConv2d, WSConv2d, crms_norm, group_norm, instance_norm, norm_factory, standardize,
)


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 0.5


def _naive_bn_train(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BN by hand: per-channel statistics over (N, H, W) with a biased variance."""
    xc = x.transpose(0, 1).reshape(x.shape[1], -1)
    mean, var = xc.mean(1), ((xc - xc.mean(1, keepdim=True)) ** 2).mean(1)
    return (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + eps), mean, var


# ---------------------------------------------------------------- Ghost BN
def test_ghost_bn_with_virtual_batch_equal_to_batch_is_bn() -> None:
    x = _x(16, 4, 5, 5)
    gbn, bn = GhostBatchNorm2d(4, virtual_batch_size=16).double(), nn.BatchNorm2d(4).double()
    with torch.no_grad():
        gbn.weight.uniform_(0.5, 2), gbn.bias.normal_()
    bn.load_state_dict(gbn.state_dict(), strict=False)
    torch.testing.assert_close(gbn(x), bn(x))
    torch.testing.assert_close(gbn.running_var, bn.running_var)
    gbn.eval(), bn.eval()
    torch.testing.assert_close(gbn(x), bn(x))


@pytest.mark.parametrize("batch", [12, 14])  # 14 leaves a remainder ghost batch of 2
def test_ghost_bn_matches_one_bn_forward_per_ghost_batch(batch: int) -> None:
    x = _x(batch, 3, 4, 4, seed=1)
    gbn = GhostBatchNorm2d(3, virtual_batch_size=4).double()
    ref = nn.BatchNorm2d(3).double()  # the official recipe: a separate BN forward per chunk
    with torch.no_grad():
        ref.running_mean.normal_(), gbn.running_mean.copy_(ref.running_mean)
    expected = torch.cat([ref(chunk) for chunk in x.split(4)])
    torch.testing.assert_close(gbn(x), expected)
    torch.testing.assert_close(gbn.running_mean, ref.running_mean)
    torch.testing.assert_close(gbn.running_var, ref.running_var)
    assert int(gbn.num_batches_tracked) == len(x.split(4))


def test_ghost_bn_gradients_match_per_chunk_bn() -> None:
    x1 = _x(8, 2, 3, 3, seed=2).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    gbn, ref = GhostBatchNorm2d(2, virtual_batch_size=4).double(), nn.BatchNorm2d(2).double()
    w = _x(8, 2, 3, 3, seed=3)
    (gbn(x1) * w).sum().backward()
    (torch.cat([ref(c) for c in x2.split(4)]) * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(gbn.weight.grad, ref.weight.grad)


def test_ghost_bn_rejects_bad_virtual_batch() -> None:
    with pytest.raises(InputError, match="virtual_batch_size"):
        GhostBatchNorm2d(4, virtual_batch_size=0)


# ---------------------------------------------------------------- GN / IN / LN
def test_group_norm_with_one_channel_per_group_is_instance_norm() -> None:
    x = _x(3, 8, 5, 5)
    gn, inorm = group_norm(8, num_groups=8).double(), instance_norm(8).double()
    torch.testing.assert_close(gn(x), inorm(x))
    manual = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(inorm(x), manual)


def test_group_norm_closed_form_and_fitted_groups() -> None:
    x = _x(2, 16, 3, 3)
    gn = group_norm(16).double()  # the paper's G = 32 cannot split 16 channels: gcd gives 16
    assert gn.num_groups == 16
    gn4 = group_norm(16, num_groups=4).double()
    xg = x.reshape(2, 4, -1)
    manual = ((xg - xg.mean(-1, keepdim=True)) / torch.sqrt(xg.var(-1, unbiased=False, keepdim=True) + 1e-5)).view_as(x)
    torch.testing.assert_close(gn4(x), manual)
    assert group_norm(64).num_groups == 32


def test_instance_norm_same_in_train_and_eval() -> None:
    x = _x(4, 3, 6, 6)
    layer = instance_norm(3).double()
    out_train = layer.train()(x)
    torch.testing.assert_close(layer.eval()(x), out_train)


def test_layer_norm_2d_normalizes_channels_per_pixel() -> None:
    x = _x(2, 6, 4, 5)
    ln = LayerNorm2d(6).double()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2), ln.bias.normal_()
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    manual = (x - mean) / torch.sqrt(var + 1e-5) * ln.weight.view(1, -1, 1, 1) + ln.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(ln(x), manual)
    torch.testing.assert_close(ln(x.contiguous(memory_format=torch.channels_last)), manual)
    with pytest.raises(InputError, match="expects"):
        ln(x[0])


# ---------------------------------------------------------------- WS / BCN / EstBN
def test_standardize_gives_zero_mean_and_unit_std_per_output() -> None:
    w = _x(8, 3, 3, 3)
    s = standardize(w)
    flat = s.flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(8, dtype=w.dtype), atol=1e-12, rtol=0)
    # std + eps in the denominator: the standardized std is std / (std + 1e-5)
    std = w.flatten(1).std(1)
    torch.testing.assert_close(flat.std(1), std / (std + 1e-5))


def test_ws_conv_is_conv_with_standardized_kernel_and_keeps_keys() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=True).double()
    ws = WSConv2d.from_conv(conv)
    assert ws.weight is conv.weight and list(ws.state_dict()) == list(conv.state_dict())
    x = _x(2, 3, 6, 6)
    w = conv.weight.detach()
    w_hat = (w - w.mean((1, 2, 3), keepdim=True)) / (w.flatten(1).std(1).view(-1, 1, 1, 1) + 1e-5)
    torch.testing.assert_close(ws(x), F.conv2d(x, w_hat, conv.bias, padding=1))


def test_bcn_is_bn_then_per_sample_group_norm_with_group_affine() -> None:
    x = _x(4, 8, 3, 3)
    bcn = BatchChannelNorm2d(8, num_groups=2).double()
    with torch.no_grad():
        bcn.weight.copy_(torch.tensor([1.5, 0.5])), bcn.bias.copy_(torch.tensor([0.1, -0.2]))
        bcn.bn.weight.uniform_(0.5, 2), bcn.bn.bias.normal_()
    y, _, _ = _naive_bn_train(x, 1e-5)
    y = y * bcn.bn.weight.view(1, -1, 1, 1) + bcn.bn.bias.view(1, -1, 1, 1)
    yg = y.reshape(4, 2, -1)
    z = (yg - yg.mean(-1, keepdim=True)) / torch.sqrt(yg.var(-1, unbiased=False, keepdim=True) + 1e-5)
    expected = (z * bcn.weight.view(1, 2, 1) + bcn.bias.view(1, 2, 1)).view_as(x)
    torch.testing.assert_close(bcn(x), expected)
    bcn.eval()
    out_cl = bcn(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, bcn(x))
    assert out_cl.is_contiguous(memory_format=torch.channels_last)


def test_bcn_eval_uses_running_stats_in_its_bn_part() -> None:
    bcn = BatchChannelNorm2d(4, num_groups=1).double().eval()
    with torch.no_grad():
        bcn.bn.running_mean.fill_(3.0), bcn.bn.running_var.fill_(4.0)
    x = _x(1, 4, 2, 2)  # a single image is fine at test time
    y = (x - 3.0) / torch.sqrt(torch.tensor(4.0 + 1e-5, dtype=x.dtype))
    yg = y.reshape(1, 1, -1)
    expected = ((yg - yg.mean()) / torch.sqrt(yg.var(unbiased=False) + 1e-5)).view_as(x)
    torch.testing.assert_close(bcn(x), expected)


def test_estbn_updates_then_normalizes_with_running_stats() -> None:
    x = _x(4, 3, 2, 2)
    est = EstBN(3, estbn_moving_speed=0.25).double()
    with torch.no_grad():
        est.running_mean.fill_(1.0)
    old_mean = est.running_mean.clone()
    batch_mean = x.mean((0, 2, 3))
    dev = ((x - old_mean.view(1, -1, 1, 1)) ** 2).mean((0, 2, 3))
    out = est(x)
    new_mean, new_var = 0.75 * old_mean + 0.25 * batch_mean, 0.75 * 1.0 + 0.25 * dev
    torch.testing.assert_close(est.running_mean, new_mean)
    torch.testing.assert_close(est.running_var, new_var)
    torch.testing.assert_close(out, (x - new_mean.view(1, -1, 1, 1)) / torch.sqrt(new_var.view(1, -1, 1, 1) + 1e-5))


# ---------------------------------------------------------------- Scaled WS
def test_scaled_ws_kernel_closed_form() -> None:
    conv = nn.Conv2d(4, 5, 3, bias=False).double()
    sws = ScaledStdConv2d.from_conv(conv, gamma=1.7139)
    with torch.no_grad():
        sws.gain.uniform_(0.5, 2)
    w = conv.weight.detach().flatten(1)
    n = w.shape[1]
    expected = sws.gain.detach().flatten(1) * 1.7139 * (w - w.mean(1, keepdim=True)) / torch.sqrt(
        n * w.var(1, unbiased=False, keepdim=True) + n * 1e-6
    )
    torch.testing.assert_close(sws.standardized_weight().flatten(1), expected)
    # with gain 1 and gamma 1 every output kernel has squared norm ~1: activations keep their variance
    plain = ScaledStdConv2d.from_conv(nn.Conv2d(4, 5, 3, bias=False).double())
    torch.testing.assert_close(plain.standardized_weight().flatten(1).square().sum(1), torch.ones(5, dtype=w.dtype), rtol=1e-3, atol=0)


# ---------------------------------------------------------------- PowerNorm
def _pn_reference(x: torch.Tensor, phi: torch.Tensor, it: int, warmup: int, afwd: float = 0.9, eps: float = 1e-5):
    """PowerNorm forward by hand (group_num = 1) for step ``it`` (1-based); returns (y, new running ψ²)."""
    xs = x / torch.sqrt((x**2).mean(1, keepdim=True) + 1e-5)
    psi2 = (xs**2).mean((0, 2, 3)).view(1, -1, 1, 1)
    z = xs / torch.sqrt((psi2 if it <= warmup else phi) + eps)
    new = phi.clone()
    if it < warmup:
        new = new * (it - 1) / it + psi2 / it
    new = afwd * new + (1 - afwd) * psi2
    return z, new


def test_power_norm_forward_warmup_and_running_phi() -> None:
    pn = PowerNorm2d(3, warmup_iters=2).double()
    phi = pn.running_phi.clone()
    for it in (1, 2, 3):
        x = _x(4, 3, 3, 3, seed=it)
        expected, phi = _pn_reference(x, phi, it, warmup=2)
        torch.testing.assert_close(pn(x), expected)
        torch.testing.assert_close(pn.running_phi, phi)
    pn.eval()
    x = _x(2, 3, 3, 3, seed=9)
    xs = x / torch.sqrt((x**2).mean(1, keepdim=True) + 1e-5)
    torch.testing.assert_close(pn(x), xs / torch.sqrt(phi + 1e-5))


def test_power_norm_has_no_mean_subtraction() -> None:
    # a constant positive map keeps its sign: BN would send it to 0
    pn = PowerNorm2d(2).double()
    out = pn(torch.full((2, 2, 3, 3), 4.0, dtype=torch.float64))
    assert (out > 0.9).all()


def test_power_norm_backward_is_the_approximate_gradient() -> None:
    pn = PowerNorm2d(3, warmup_iters=100).double()
    with torch.no_grad():
        pn.weight.uniform_(0.5, 2), pn.ema_gz.fill_(0.3)
    x = _x(4, 3, 2, 2, seed=5)
    xs = (x / torch.sqrt((x**2).mean(1, keepdim=True) + 1e-5)).detach().requires_grad_()
    g_out = _x(4, 3, 2, 2, seed=6)
    out = _PowerFunction.apply(
        xs, pn.weight, pn.bias, pn.running_phi, pn.ema_gz, pn.eps, pn.afwd, pn.abkw, 1, pn.warmup_iters
    )
    out.backward(g_out)
    psi2 = (xs.detach() ** 2).mean((0, 2, 3)).view(1, -1, 1, 1)
    z = xs.detach() / torch.sqrt(psi2 + 1e-5)
    g = g_out * pn.weight.detach().view(1, -1, 1, 1)
    approx = g - 0.1 * 0.3 * z
    torch.testing.assert_close(xs.grad, approx / torch.sqrt(psi2 + 1e-5))
    torch.testing.assert_close(pn.ema_gz, 0.3 + (approx * z).mean((0, 2, 3), keepdim=True))
    torch.testing.assert_close(pn.weight.grad, (g_out * z).sum((0, 2, 3)))


# ---------------------------------------------------------------- RMSNorm / CRMSNorm
def test_rms_norm_eps_outside_sqrt_and_partial() -> None:
    x = _x(3, 8)
    layer = RMSNorm(8, eps=0.5).double()
    rms = torch.sqrt((x**2).mean(-1, keepdim=True))
    torch.testing.assert_close(layer(x), x / (rms + 0.5))
    part = RMSNorm(8, partial=0.25).double()
    rms_p = torch.sqrt((x[:, :2] ** 2).mean(-1, keepdim=True))
    torch.testing.assert_close(part(x), x / (rms_p + 1e-8))


def test_rms_norm_equals_layer_norm_on_zero_mean_input() -> None:
    x = _x(5, 16)
    x = x - x.mean(-1, keepdim=True)
    ln = F.layer_norm(x, (16,), eps=0.0)
    torch.testing.assert_close(RMSNorm(16, eps=0.0).double()(x), ln)


def test_rms_norm_2d_over_channels() -> None:
    x = _x(2, 4, 3, 3)
    rms = torch.sqrt((x**2).mean(1, keepdim=True))
    torch.testing.assert_close(RMSNorm2d(4).double()(x), x / (rms + 1e-8))


def test_crms_norm_is_layer_norm_of_the_implied_zero_mean_vector() -> None:
    full = _x(6, 9)
    full = full - full.mean(-1, keepdim=True)  # zero-mean d = 9 vector
    compressed = full[:, :-1]
    ln = F.layer_norm(full, (9,), eps=1e-5)
    torch.testing.assert_close(crms_norm(compressed), ln[:, :-1])
    torch.testing.assert_close(CRMSNorm(8).double()(compressed), ln[:, :-1])


# ---------------------------------------------------------------- every kind: shapes and modes
@pytest.mark.parametrize("kind", sorted(NORMS))
def test_every_kind_keeps_the_shape_in_train_and_eval(kind: str) -> None:
    layer = norm_factory(kind, **({"num_groups": 4} if kind in ("gn", "bcn") else {}))(8).double()
    x = _x(2, 8, 5, 7)
    assert layer.train()(x).shape == x.shape
    single = _x(1, 8, 3, 1)  # one image, odd spatial size: fine at test time for every kind
    out = layer.eval()(single)
    assert out.shape == single.shape and torch.isfinite(out).all()
