"""The registered ``sar`` equals a transcription of mr-eggplant/SAR (in tests/test_sar_step.py)
on real noisy CIFAR-10 batches through ResNet-20: logits, parameters, SGD momentum and the loss
average over several steps, including the model recovery (forced by a high threshold)."""
from __future__ import annotations

import math

import pytest
import torch

from entropy_batch import noisy_batches
from method_twins import assert_same_parameters, reference_and_adapter
from test_sar_step import RefSAM, RefSAR, ref_collect_params

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize("threshold,resets", [(0.2, 0), (10.0, 3)])
def test_registered_sar_equals_the_reference(cifar10_test, resnet20_checkpoint, threshold, resets):
    ref_model, adapter = reference_and_adapter(resnet20_checkpoint, "sar", reset_threshold=threshold)
    assert adapter.hparams()["lr"] == 1e-3
    ref_opt = RefSAM(ref_collect_params(ref_model), torch.optim.SGD, lr=1e-3, momentum=0.9)
    ref = RefSAR(ref_model, ref_opt, 0.4 * math.log(10), threshold, slip=False)
    seen = 0
    for x in noisy_batches(cifar10_test, n_batches=3, batch_size=48):
        ref_logits, _, _, ref_reset = ref.forward(x)
        logits = adapter(x)
        torch.testing.assert_close(logits, ref_logits.detach(), rtol=0, atol=1e-10)
        assert_same_parameters(ref_model, adapter.model)
        moms = [adapter.optimizer.base_optimizer.state[p]["momentum_buffer"]
                for p in adapter.optimizer.param_groups[0]["params"]]
        ref_moms = [ref_opt.base_optimizer.state[p]["momentum_buffer"] for p in ref_collect_params(ref_model)]
        for a, b in zip(moms, ref_moms):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)  # momentum survives a recovery, as in SAR
        state = adapter.memory.state
        assert (state.ema is None) == (ref.ema is None)
        if ref.ema is not None:
            assert state.ema == pytest.approx(ref.ema, rel=1e-12)
        seen += ref_reset
    assert seen == resets
