"""The registered ``rdumb`` equals a transcription of oripress/CCC ``models/rdumb.py`` (in
tests/test_rdumb_step.py) on real noisy CIFAR-10 batches through ResNet-20, with the reset period
shortened so that the full resets (model, optimizer, moving average) happen inside the run."""
from __future__ import annotations

import pytest
import torch

from entropy_batch import noisy_batches
from method_twins import assert_same_parameters, reference_and_adapter
from test_rdumb_step import RefRDumb

pytestmark = pytest.mark.realdata


def test_registered_rdumb_equals_the_reference_through_resets(cifar10_test, resnet20_checkpoint):
    ref_model, adapter = reference_and_adapter(resnet20_checkpoint, "rdumb", reset_every=2, optimizer="sgd",
                                               lr=1e-3, momentum=0.9)
    ref = RefRDumb(ref_model, reset_every=2)  # SGD 1e-3, momentum 0.9, d_margin 0.4
    resets = []
    for x in noisy_batches(cifar10_test, n_batches=5, batch_size=32):
        ref_logits = ref.forward(x)
        logits = adapter(x)
        torch.testing.assert_close(logits, ref_logits.detach(), rtol=0, atol=1e-10)
        assert_same_parameters(ref_model, adapter.model)
        probs = adapter.memory.state.eta.probs
        assert (probs is None) == (ref.current_model_probs is None)
        if probs is not None:
            torch.testing.assert_close(probs, ref.current_model_probs, rtol=0, atol=1e-12)
        for p, q in zip(adapter.optimizer.param_groups[0]["params"], ref.optimizer.param_groups[0]["params"]):
            torch.testing.assert_close(adapter.optimizer.state[p]["momentum_buffer"],
                                       ref.optimizer.state[q]["momentum_buffer"], rtol=0, atol=1e-10)
        resets.append(int(adapter.memory.state.steps))
    assert resets == [1, 2, 3, 4, 5] and ref.total_steps == 5
