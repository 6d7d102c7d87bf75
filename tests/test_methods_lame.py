"""``lame`` through the registered adapter against an independent transcription of fiveai/LAME.

The reference splits the shared ResNet-20 by hand (features = pooled output of the last
stage, as mariodoebler's ``split_up_model``) and runs ``ref_lame`` (``test_lame_solver``,
transcribed from ``src/adaptation/lame.py``). Over several real noisy CIFAR-10 batches
the adapter returns the same probabilities, changes no state and builds no graph; over
UnMix-TNS the components move exactly as the fork's layer moves them, one forward per batch.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import tta
from conftest import to_tensor
from test_lame_solver import ref_lame
from test_methods_rotta import assert_close_lists, components, ref_replace_bn_with_unmix


@pytest.fixture(scope="module")
def stream(cifar10_test):
    images, _ = cifar10_test
    x = to_tensor(images[:256:2])
    return (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)


@pytest.fixture(scope="module")
def resnet20(resnet20_checkpoint):
    return tta.load_model("resnet20", checkpoint=resnet20_checkpoint)


def ref_features_logits(model, x):
    """The frozen model split into encoder and classifier by hand (ResNet-20's layout)."""
    with torch.no_grad():
        h = model.layer3(model.layer2(model.layer1(F.relu(model.bn1(model.conv1(model.normalize(x)))))))
        feats = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return feats, model.linear(feats)


@pytest.mark.realdata
@pytest.mark.parametrize("affinity,knn", [("rbf", 5), ("kNN", 3), ("linear", 5)])
def test_lame_adapter_returns_the_official_probabilities(resnet20, stream, affinity, knn):
    adapter = tta.adapt(resnet20, "lame", affinity=affinity, knn=knn)
    assert adapter.output == "probabilities" and not adapter.needs_grad
    before = copy.deepcopy(adapter.model.state_dict())
    moved = 0
    for b in range(0, len(stream), 64):
        x = stream[b : b + 64]
        feats, logits = ref_features_logits(resnet20, x)
        want, _ = ref_lame(logits, feats, affinity, knn)
        got = adapter(x.clone().requires_grad_(True))
        assert not got.requires_grad
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        moved += int((got.argmax(1) != logits.argmax(1)).sum())
    assert moved > 0  # the Laplacian term changed some decisions
    after = adapter.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # the model is frozen


@pytest.mark.realdata
def test_lame_runs_under_inference_mode_and_batch_of_one_is_the_source_softmax(resnet20, stream):
    adapter = tta.adapt(resnet20, "lame")
    with torch.inference_mode():
        out = adapter(stream[:64])
    torch.testing.assert_close(out, adapter(stream[:64]))
    with torch.no_grad():
        p = resnet20(stream[:1]).softmax(1)
    torch.testing.assert_close(adapter(stream[:1]), p)  # rbf at B = 1: sigma = 0, the official NaN avoided


@pytest.mark.realdata
def test_lame_over_unmix_tns_equals_the_fork_composition(resnet20, stream):
    K = 4
    ref_model = ref_replace_bn_with_unmix(copy.deepcopy(resnet20).requires_grad_(False), K, seed=0, momentum=0.1)
    adapter = tta.adapt(resnet20, "lame", stats="unmix-tns", stats_options={"K": K, "seed": 0, "batch_size": 64},
                        channels_last=False)
    for b in range(0, len(stream), 64):
        x = stream[b : b + 64]
        feats, logits = ref_features_logits(ref_model, x)  # one forward: the components move once
        want, _ = ref_lame(logits, feats, "rbf", 5)
        torch.testing.assert_close(adapter(x), want, atol=1e-5, rtol=1e-4)
        assert_close_lists(components(adapter.model), components(ref_model), 1e-5)
    adapter.reset()
    assert_close_lists(components(adapter.model),
                       components(ref_replace_bn_with_unmix(copy.deepcopy(resnet20), K, 0, 0.1)), 1e-6)


class _FixedProbabilities(torch.nn.Module):
    """Says it returns probabilities: 0.7 on class (label of pixel (0,0,0)), the rest spread evenly."""

    output = "probabilities"

    def forward(self, x):
        idx = (x[:, 1, 0, 0] * 255).round().long() + 256 * (x[:, 2, 0, 0] * 255).round().long()
        p = torch.full((len(x), 10), 0.3 / 9)
        p[torch.arange(len(x)), self.y[idx] % 10] = 0.7
        return p


def test_tta_run_scores_probabilities_without_a_softmax():
    import numpy as np

    from test_streams_order import ToySource
    from tta.pipeline.evaluate import evaluate, expected_calibration_error
    from tta.streams import make_stream

    src = ToySource(n=64)
    model = _FixedProbabilities()
    model.y = torch.from_numpy(src.y)
    m = evaluate(model, make_stream(src, "mixed", batch_size=10, seed=1), progress=False)
    assert m.overall_error == 0.0
    # confidence is the returned 0.7 itself; a softmax of it would give about 0.19
    assert m.ece == pytest.approx(expected_calibration_error(np.full(192, 0.7), np.ones(192, bool)))
    assert m.ece == pytest.approx(30.0, abs=1e-4)
