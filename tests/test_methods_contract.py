"""The adapter contract for every method of this package: reset, state_dict, inference mode,
options, hparams, batch size 1, errors, and the fast no-grad path against the autograd path."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import tta
from tta.catalog import methods as list_methods
from tta.errors import InputError, TTAError
from tta.methods import method_defaults
from test_methods_stats import batches, tiny_net

STATS = ["tbn", "tbn-ema", "alpha-bn", "unmix-tns", "adab2n", "momentum-decay"]
GRAD = ["tent", "alpha-bn-mcc", "momentum-decay-hbs"]
EXTRA = {"tbn": {"prior": 4}, "unmix-tns": {"K": 3}}  # options that exercise the stateful paths



def seeded_adapt(net, name, **options):
    """Two adapters built after the same torch.manual_seed start identical (UnMix-TNS draws its noise from it)."""
    torch.manual_seed(0)
    return tta.adapt(net, name, **options)

@pytest.mark.parametrize("name", STATS + GRAD)
def test_reset_and_state_dict_restore_identical_outputs(name):
    net, xs = tiny_net(), batches(4)
    a = tta.adapt(net, name, **EXTRA.get(name, {}))
    first = a(xs[0])
    a(xs[1])
    a.reset()
    assert torch.equal(a(xs[0]), first)
    a(xs[1])
    b = tta.adapt(net, name, **EXTRA.get(name, {}))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(xs[2]), b(xs[2]))


@pytest.mark.parametrize("name", STATS)
def test_normalization_methods_run_under_inference_mode_and_after_it(name):
    net, xs = tiny_net(), batches(3)
    a, b = seeded_adapt(net, name), seeded_adapt(net, name)
    with torch.inference_mode():
        outs = [a(xs[0]), a(xs[1])]
    outs.append(a(xs[2]))  # buffers were updated in place, so they are still normal tensors
    expected = [b(x) for x in xs]
    assert all(torch.allclose(u, v, atol=1e-6) for u, v in zip(outs, expected))
    assert not any(t.is_inference() for t in a.state_dict().values())


@pytest.mark.parametrize("name", STATS)
def test_fast_path_equals_the_autograd_path(name):
    """Outside autograd the layers use fused kernels; inside, plain differentiable ops."""
    net, xs = tiny_net(), batches(2)
    a = seeded_adapt(net, name, **EXTRA.get(name, {}))
    b = seeded_adapt(net, name, **EXTRA.get(name, {}))
    for x in xs:
        fast = a(x)
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            exact = b.adapt_forward(xg)  # bypasses forward's no_grad on purpose
        assert torch.allclose(fast, exact.detach(), atol=1e-5)
    for (k, u), v in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(u.float(), v.float(), atol=1e-5), k


@pytest.mark.parametrize("name", STATS)
def test_normalization_methods_build_no_graph(name):
    net = tiny_net()
    a = tta.adapt(net, name)
    out = a(batches(1)[0].requires_grad_(True))
    assert not out.requires_grad


@pytest.mark.parametrize("name", STATS + GRAD)
@pytest.mark.parametrize("dataset,shift", [("cifar10", "iid"), ("cifar100", "mixed"), ("imagenet", "continual"), (None, None)])
def test_documented_defaults_are_accepted_and_hparams_round_trip(name, dataset, shift):
    net = tiny_net()
    a = tta.adapt(net, name, **method_defaults(name, dataset, shift))
    hp = a.hparams()
    json.dumps(hp)
    b = tta.adapt(net, name, **hp)
    assert b.hparams() == hp


@pytest.mark.parametrize("name", STATS + GRAD)
def test_batch_size_one_works_or_says_why(name):
    a = tta.adapt(tiny_net(), name)
    x = batches(1, b=1)[0]
    if name in ("unmix-tns", "alpha-bn", "alpha-bn-mcc"):
        assert torch.isfinite(a(x)).all()
    else:
        with pytest.raises(InputError, match=r"at least 2 images \(.+\)"):
            a(x)
    assert torch.isfinite(tta.adapt(tiny_net(), "tbn", prior=16)(x)).all()


@pytest.mark.parametrize("name", STATS)
def test_statistics_methods_need_batchnorm(name):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(TTAError, match="no BatchNorm1d/2d"):
        tta.adapt(net, name)


@pytest.mark.parametrize(
    "name,options,error,match",
    [
        ("tbn", {"priro": 1}, TTAError, "no option priro"),
        ("tbn", {"prior": -1}, InputError, "prior must be"),
        ("alpha-bn", {"source_weight": 1.5}, InputError, "source_weight must be"),
        ("unmix-tns", {"K": 0}, InputError, "K must be"),
        ("unmix-tns", {"K": 2.5}, InputError, "K must be an integer"),
        ("adab2n", {"kappa": 2}, InputError, "kappa must be"),
        ("adab2n", {"normalize": "x"}, InputError, "normalize must be"),
        ("tent", {"optimizer": "lbfgs"}, InputError, "unknown optimizer"),
        ("tent", {"norm": "tent"}, InputError, "not a statistics method"),
        ("tent", {"norm_options": {"K": 4}}, TTAError, "no option K"),
        ("alpha-bn-mcc", {"temperature": 0}, InputError, "temperature must be"),
    ],
)
def test_bad_options_raise_one_line_errors_with_a_fix(name, options, error, match):
    with pytest.raises(error, match=match) as info:
        tta.adapt(tiny_net(), name, **options)
    assert "\n" not in str(info.value) and ";" in str(info.value)


def test_listing_shows_every_method_with_its_shift_defaults():
    text = "\n".join(list_methods())
    for name in STATS + GRAD:
        assert f"\n{name} " in "\n" + text
    assert "defaults[shift=mixed]: K=128" in text
