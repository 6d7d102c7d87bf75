"""The registered ``roid`` equals a transcription of mariodoebler/test-time-adaptation
``methods/roid.py`` (in tests/test_roid_step.py) on real noisy CIFAR-10 batches through ResNet-20,
the augmentation drawn from a generator seeded like the adapter's; UnMix-TNS + ROID keeps the
UnMix-TNS defaults and the protocol lr, adapts and ensembles the UnMix affine parameters, and
resets and resumes exactly."""
from __future__ import annotations

import io

import pytest
import torch

import tta
from method_twins import assert_same_parameters, reference_and_adapter
from test_cotta_step import noisy_batches
from test_roid_step import CFG_BATCH, OfficialROID
from tta.methods._view_augment import ROID_AUGMENT, augment_views, sample_view_params
from tta.methods.unmix_tns import UnMixTNS2d

pytestmark = pytest.mark.realdata


def test_registered_roid_equals_the_reference(cifar10_test, resnet20_checkpoint):
    raw, adapter = reference_and_adapter(resnet20_checkpoint, "roid", torch.float32, configure=lambda m: m,
                                         loss_batch_size=CFG_BATCH, seed=2)
    official = OfficialROID(raw)
    g = torch.Generator().manual_seed(2)
    for x in noisy_batches(cifar10_test[0], 4, 16, sigma=0.15):
        params = sample_view_params(1, 32, ROID_AUGMENT, g)
        expected = official.forward_and_adapt(x, lambda subset: augment_views(subset, params, ROID_AUGMENT))
        got = adapter(x)
        assert torch.allclose(got, expected, atol=1e-6, rtol=0), (got - expected).abs().max()
        assert torch.allclose(adapter.memory.class_probs, official.class_probs_ema, atol=1e-7)
        assert_same_parameters(official.model, adapter.model, atol=1e-7)
    assert int(adapter.memory.collapses) == 0


def test_unmix_tns_plus_roid_composes_as_in_the_unmix_tns_code(cifar10_test, resnet20_checkpoint):
    model = tta.load_model("resnet20", checkpoint=resnet20_checkpoint)
    a = tta.adapt(model, "roid", dataset="cifar10", shift="mixed", stats="unmix-tns")
    hp = a.hparams()
    assert hp["stats_options"]["K"] == 128 and (hp["optimizer"], hp["lr"]) == ("adam", 1e-5)
    layers = [m for m in a.model.modules() if isinstance(m, UnMixTNS2d)]
    assert layers and not any(isinstance(m, torch.nn.BatchNorm2d) for m in a.model.modules())
    trained = {id(p) for p in a.optimizer.param_groups[0]["params"]}
    assert trained == {id(p) for m in layers for p in (m.weight, m.bias)}
    xs = noisy_batches(cifar10_test[0], 4, 32)
    before = layers[0].mu_k.clone()
    outs = [a(x) for x in xs[:2]]
    assert not torch.equal(layers[0].mu_k, before)  # both forwards of a batch update the components
    saved = io.BytesIO()
    torch.save(a.state_dict(), saved)
    rest = [a(x) for x in xs[2:]]
    b = tta.adapt(model, "roid", dataset="cifar10", shift="mixed", stats="unmix-tns")
    b.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    assert all(torch.equal(b(x), want) for x, want in zip(xs[2:], rest))
    a.reset()
    assert torch.equal(a(xs[0]), outs[0])
