"""The registered ``deyo`` equals a transcription of Jhyun17/DeYO (in tests/test_deyo_step.py) on
real noisy CIFAR-10 batches through ResNet-20, with the patch permutations drawn from a generator
seeded like the adapter's (``seed``); the run's seed becomes the method's seed."""
from __future__ import annotations

import math

import pytest
import torch

import tta
from entropy_batch import noisy_batches
from method_twins import assert_same_parameters, reference_and_adapter
from test_deyo_step import ref_forward_and_adapt


@pytest.mark.realdata
def test_registered_deyo_equals_the_reference(cifar10_test, resnet20_checkpoint):
    ref_model, adapter = reference_and_adapter(resnet20_checkpoint, "deyo", seed=7)
    ref_opt = torch.optim.Adam([p for p in ref_model.parameters() if p.requires_grad], 1e-3, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(7)

    def rand(*shape):
        return torch.rand(*shape, generator=gen)

    counts = []
    for x in noisy_batches(cifar10_test, n_batches=3, batch_size=48):
        ref_logits, ids1, ids2 = ref_forward_and_adapt(
            x, ref_model, ref_opt, 0.5 * math.log(10), 0.4 * math.log(10), 0.2, 4, rand)
        torch.testing.assert_close(adapter(x), ref_logits.detach(), rtol=0, atol=1e-10)
        assert_same_parameters(ref_model, adapter.model)
        counts.append((ids1.numel(), ids2.numel()))
    assert all(0 < n2 < n1 < 48 for n1, n2 in counts)


def test_the_run_seed_seeds_the_patch_permutations():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    a = tta.adapt(net, "deyo", run_seed=5)
    assert a.hparams()["seed"] == 5
    assert torch.equal(a.generator.get_state(), torch.Generator().manual_seed(5).get_state())
    assert tta.adapt(net, "deyo", run_seed=5, seed=2).hparams()["seed"] == 2
