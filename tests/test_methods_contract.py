"""The adapter contract, checked for every registered method (a new method is covered without
editing this file): reset, state_dict round trip, resume equality, inference mode for
statistics-only methods, documented defaults, hparams, batch size 1, and bad options and input.

The test-only recipe in ``memory_teacher_recipe`` (statistics policy + objective + memory +
EMA teacher + generator + step hook) is registered while this module runs, so the contract
is also proven for the parts no built-in method uses yet.
"""
from __future__ import annotations

import io
import json
import math

import pytest
import torch
from torch import nn

import tta
from memory_teacher_recipe import NAME as MEMORY_TEACHER
from memory_teacher_recipe import registered
from tta.catalog import methods as list_methods
from tta.errors import InputError, TTAError
from tta.methods import METHODS, STATS, get_method, method_defaults
from test_methods_stats import batches, tiny_net

ALL = sorted([*METHODS, MEMORY_TEACHER])
STATS_ONLY = [n for n in METHODS if get_method(n).stats_only]
#: methods that never build a graph: statistics-only ones and output adjustments (lame)
NO_GRAD = [n for n in METHODS if not get_method(n).needs_grad]
#: options that exercise the stateful paths of some methods (optional; any method works without)
EXTRA = {"tbn": {"prior": 4}, "unmix-tns": {"K": 3, "seed": 0},
         "rotta": {"memory_size": 6, "update_frequency": 4}, "note": {"memory_size": 6, "update_frequency": 4}}


def build(model: nn.Module, name: str, **options):
    """tta.adapt after a fixed torch seed: methods that draw their initialization from torch's
    global RNG (UnMix-TNS with seed=None, as under tta run) then start identical every time."""
    torch.manual_seed(0)
    return tta.adapt(model, name, **options)


def _source_npy() -> str:
    """A tiny .npy of uint8 NHWC images: the clean source data EATA refuses to run without."""
    import os
    import tempfile

    import numpy as np

    path = os.path.join(tempfile.mkdtemp(prefix="tta-contract-"), "source.npy")
    np.save(path, np.random.default_rng(0).integers(0, 256, (24, 8, 8, 3), dtype=np.uint8))
    return path


#: options a method cannot be built without
REQUIRED = {"eata": {"source_data": _source_npy(), "fisher_samples": 16, "fisher_batch": 8}}
#: roid's consistency forward on a kept subset of one image fails in tiny_net's BatchNorm1d (as in the
#: reference); tests/test_methods_roid.py covers it, with resume, on ResNet-20
EXTRA = {**EXTRA, **REQUIRED, "roid": {"use_consistency": False}}


@pytest.fixture(autouse=True, scope="module")
def _memory_teacher():
    with registered():
        yield


def _tensors(state: dict) -> dict:
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _equal_states(a: dict, b: dict) -> bool:
    """Tensors equal exactly; extra state (optimizer moments, memory, generator) equal after a save/load."""
    def flat(s):
        buf = io.BytesIO()
        torch.save(s, buf)
        return buf.getvalue()
    return a.keys() == b.keys() and all(
        torch.equal(u, b[k]) if isinstance(u, torch.Tensor) else flat(u) == flat(b[k]) for k, u in a.items())


@pytest.mark.parametrize("name", ALL)
def test_reset_restores_every_part_exactly(name):
    net, xs = tiny_net(), batches(4)
    a = build(net, name, **EXTRA.get(name, {}))
    initial = {k: v for k, v in a.state_dict().items()}
    initial = torch.load(io.BytesIO(_save(initial)), weights_only=True)
    first = a(xs[0])
    a(xs[1])
    assert int(a.steps) == 2
    a.reset()
    assert _equal_states(a.state_dict(), initial)  # student, teacher, memory, optimizer, counters
    assert torch.equal(a(xs[0]), first)


def _save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("name", ALL)
def test_resume_from_a_saved_state_dict_equals_the_uninterrupted_run(name):
    """What ``tta run`` saves (state_dict, read back with weights_only) continues the run exactly."""
    net, xs = tiny_net(), batches(6)
    whole = build(net, name, **EXTRA.get(name, {}))
    expected = [whole(x) for x in xs]
    cut = build(net, name, **EXTRA.get(name, {}))
    for x in xs[:3]:
        cut(x)
    saved = _save(cut.state_dict())
    resumed = build(net, name, **EXTRA.get(name, {}))
    resumed.load_state_dict(torch.load(io.BytesIO(saved), weights_only=True))
    for x, want in zip(xs[3:], expected[3:]):
        assert torch.equal(resumed(x), want)
    assert _equal_states(resumed.state_dict(), whole.state_dict())
    resumed.reset()  # the snapshot is the constructed state, not the loaded one
    assert torch.equal(resumed(xs[0]), expected[0])


def test_the_memory_teacher_recipe_really_carries_memory_teacher_and_moments():
    """Guards the test above: the parts it restores are not trivially empty."""
    a = build(tiny_net(), MEMORY_TEACHER)
    for x in batches(3):
        a(x)
    state = a.state_dict()
    assert any(k.startswith("teacher.") for k in state) and len(a.memory.images) == 7
    assert state["_extra_state"]["optimizer"]["state"] and state["_extra_state"]["generator"] is not None
    t = dict(a.teacher.named_parameters())
    assert any(not torch.equal(p, t[k]) for k, p in a.model.named_parameters())


@pytest.mark.parametrize("name", NO_GRAD)
def test_statistics_only_methods_run_under_inference_mode_and_after_it(name):
    net, xs = tiny_net(), batches(3)
    a, b = build(net, name), build(net, name)
    with torch.inference_mode():
        outs = [a(xs[0]), a(xs[1])]
    outs.append(a(xs[2]))  # buffers were updated in place, so they are still normal tensors
    expected = [b(x) for x in xs]
    assert all(torch.allclose(u, v, atol=1e-6) for u, v in zip(outs, expected))
    assert not any(t.is_inference() for t in _tensors(a.state_dict()).values())


@pytest.mark.parametrize("name", NO_GRAD)
def test_fast_path_equals_the_autograd_path(name):
    """Outside autograd the layers use fused kernels; inside, plain differentiable ops."""
    net, xs = tiny_net(), batches(2)
    a = build(net, name, **EXTRA.get(name, {}))
    b = build(net, name, **EXTRA.get(name, {}))
    for x in xs:
        fast = a(x)
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            exact = b.adapt_forward(xg)  # bypasses forward's no_grad on purpose
        assert torch.allclose(fast, exact.detach(), atol=1e-5)
    sa, sb = _tensors(a.state_dict()), _tensors(b.state_dict())
    del sa["steps"], sb["steps"]  # adapt_forward skips forward's bookkeeping
    for (k, u), v in zip(sa.items(), sb.values()):
        assert torch.allclose(u.float(), v.float(), atol=1e-5), k


@pytest.mark.parametrize("name", NO_GRAD)
def test_statistics_only_methods_build_no_graph(name):
    a = build(tiny_net(), name)
    out = a(batches(1)[0].requires_grad_(True))
    assert not out.requires_grad


@pytest.mark.parametrize("name", sorted(set(ALL) - set(NO_GRAD)))
def test_gradient_methods_refuse_inference_mode(name):
    a = build(tiny_net(), name, **REQUIRED.get(name, {}))
    with torch.inference_mode(), pytest.raises(TTAError, match="inference_mode"):
        a(batches(1)[0])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dataset,shift",
                         [("cifar10", "iid"), ("cifar100", "mixed"), ("imagenet", "continual"), (None, None)])
def test_documented_defaults_are_the_adapters_and_hparams_round_trip(name, dataset, shift):
    net = tiny_net()
    a = build(net, name, dataset=dataset, shift=shift, **REQUIRED.get(name, {}))
    hp = a.hparams()
    assert hp == {**method_defaults(name, dataset, shift), **REQUIRED.get(name, {})}  # the listing's defaults are what adapt builds
    json.dumps(hp)
    b = build(net, name, **hp)
    assert b.hparams() == hp


@pytest.mark.parametrize("name", ALL)
def test_batch_size_one_works_or_says_why(name):
    a = build(tiny_net(), name, **REQUIRED.get(name, {}))
    x = batches(1, b=1)[0]
    if a.min_batch_size <= 1:
        assert torch.isfinite(a(x)).all()
    else:
        with pytest.raises(InputError, match=r"at least 2 images \(.+\)"):
            a(x)


@pytest.mark.parametrize("name", sorted(set(STATS_ONLY) - {n for n in STATS if not STATS.get(n).swaps_batchnorm}))
def test_statistics_methods_need_batchnorm(name):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(TTAError, match="no BatchNorm1d/2d"):
        build(net, name)


def _bad_values(option) -> list:
    """Values of the wrong type or out of range for a declared option."""
    if option.choices is not None:
        return ["no-such-choice"]
    if option.type in (int, float):
        bad = ["abc", math.nan, True]
        if option.high is None or not math.isinf(option.high):
            bad.append(math.inf)
        if option.low is not None:
            bad.append(option.low - 1)
        if option.type is int:
            bad.append(2.5)
        return bad
    if option.type is bool:
        return ["yes"]
    if option.type is dict:
        return ["K=4"]
    return [3]


@pytest.mark.parametrize("name", ALL)
def test_every_declared_option_rejects_bad_values_in_one_line_naming_it(name):
    for option in get_method(name).options.options:
        for value in _bad_values(option):
            with pytest.raises(InputError, match=rf"option {option.name} must be") as info:
                build(tiny_net(), name, **{option.name: value})
            assert "\n" not in str(info.value) and ";" in str(info.value), (option.name, value)


@pytest.mark.parametrize("name", ALL)
def test_unknown_options_are_named_with_the_valid_ones(name):
    with pytest.raises(TTAError, match=r"no option bogus; valid options: ") as info:
        build(tiny_net(), name, bogus=1)
    for option in get_method(name).options.names:
        assert option in str(info.value)


@pytest.mark.parametrize(
    "name,options,error,match",
    [
        ("tent", {"stats": "tent"}, InputError, "not a statistics policy"),
        ("tent", {"stats_options": {"K": 4}}, TTAError, "no option K"),
        ("tent", {"stats": "unmix-tns", "stats_options": {"K": 0}}, InputError, "option K must be"),
        ("momentum-decay-hbs", {"stats": "tbn"}, InputError, "option stats must be one of momentum-decay"),
        ("tent", {"lr": "abc"}, InputError, "option lr must be a number"),
        ("tent", {"lr": math.nan}, InputError, "option lr must be a finite number"),
        ("tent", {"lr": math.inf}, InputError, "option lr must be a finite number"),
        ("tent", {"lr": 0}, InputError, "option lr must be 0<float"),
    ],
)
def test_bad_options_raise_one_line_errors_with_a_fix(name, options, error, match):
    with pytest.raises(error, match=match) as info:
        build(tiny_net(), name, **options)
    assert "\n" not in str(info.value) and ";" in str(info.value)


@pytest.mark.parametrize("name", ALL)
def test_bad_input_is_refused_before_any_state_changes(name):
    a = build(tiny_net(), name, **REQUIRED.get(name, {}))
    before = _save(a.state_dict())
    for bad in (torch.zeros(5, 3, 8, dtype=torch.float32), torch.zeros(5, 3, 8, 8, dtype=torch.uint8),
                torch.full((5, 3, 8, 8), math.nan)):
        with pytest.raises(InputError):
            a(bad)
    assert _save(a.state_dict()) == before


def test_listing_shows_every_method_with_its_options_and_defaults():
    text = "\n".join(list_methods())
    for name in METHODS:
        assert f"\n{name} " in "\n" + text
        for option in get_method(name).options.names:
            assert f"{option}: " in text
    assert "defaults[shift=mixed]: K=128" in text
    default = [i for i, line in enumerate(list_methods()) if "the default: tta.adapt(model)" in line]
    assert len(default) == 1 and list_methods()[default[0] - 2].startswith("regime-aware ")
    assert "defaults[stats=unmix-tns, dataset=cifar10|cifar100]: optimizer=adam, lr=1e-05" in text


def test_an_option_can_default_to_the_run_seed():
    from tta.methods import Option, OptionSet

    opts = OptionSet("x", (Option("seed", int, 0, low=0, from_context="run_seed"),))
    assert opts.resolve({}, {"run_seed": 7}) == {"seed": 7}
    assert opts.resolve({}, {}) == {"seed": 0}
    assert opts.resolve({"seed": 3}, {"run_seed": 7}) == {"seed": 3}  # the user's value wins
    assert "(the run_seed when given)" in opts.describe()[0]


@pytest.mark.parametrize("name", ["roid", "rotta", "note", "lame", "regime-aware"])
def test_methods_that_read_the_classifier_refuse_a_model_without_one_naming_the_fix(name):
    """One lookup (``_model_parts.num_classes``/``classifier_layer``) for every method that counts the
    classes or reads penultimate features; the methods with a ``num_classes`` option say to pass it."""
    headless = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(InputError, match=f"method '{name}'.*nn.Linear") as err:
        tta.adapt(headless, name)
    assert len(str(err.value).splitlines()) == 1
    assert ("pass num_classes=" in str(err.value)) == ("num_classes" in get_method(name).options.names)
    if "num_classes" in get_method(name).options.names:  # given, the classifier is not needed
        assert tta.adapt(headless, name, num_classes=4).memory.bank.num_classes == 4


def _trained(adapter) -> list[str]:
    in_optimizer = {id(p) for g in adapter.optimizer.param_groups for p in g["params"]}
    return [n for n, p in adapter.model.named_parameters() if id(p) in in_optimizer]


def test_eta_and_shot_im_train_the_parameters_their_docs_name():
    """What the deleted ``eata_parameters``/``shot_im_parameters`` tests pinned, on what ``tta.adapt`` builds:
    ETA (and EATA, RDumb) train every norm layer's affine (the reference framework's choice, docs/methods.md), never a
    conv or the classifier; SHOT-IM trains the whole feature extractor and freezes the last ``nn.Linear``."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 10))
    assert _trained(tta.adapt(model, "eta")) == ["1.weight", "1.bias", "2.weight", "2.bias"]
    assert _trained(tta.adapt(model, "shot-im")) == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]
