"""The registered ``shot-im`` equals a transcription of LINs-lab/ttab's SHOT step with cls_par = 0
(in tests/test_shot_im_step.py) on real noisy CIFAR-10 batches through ResNet-20: logits and every
parameter (the classifier frozen, the whole extractor adapted) over several steps."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import tta
from entropy_batch import noisy_batches
from method_twins import assert_same_parameters, reference_and_adapter
from tta.errors import InputError
from tta.methods.shot_im import extractor_parameters
from test_shot_im_step import ref_initialize, ref_one_adapt_step


@pytest.mark.realdata
def test_registered_shot_im_equals_the_reference(cifar10_test, resnet20_checkpoint):
    ref_model, adapter = reference_and_adapter(resnet20_checkpoint, "shot-im", configure=lambda m: m)
    hp = adapter.hparams()
    assert (hp["optimizer"], hp["lr"], hp["momentum"], hp["nesterov"]) == ("sgd", 1e-3, 0.9, True)
    ref_opt = torch.optim.SGD(ref_initialize(ref_model), lr=1e-3, momentum=0.9, nesterov=True)
    linear = adapter.model.linear.weight.detach().clone()
    for x in noisy_batches(cifar10_test, n_batches=3, batch_size=48):
        ref_logits, _ = ref_one_adapt_step(ref_model, ref_opt, x)
        torch.testing.assert_close(adapter(x), ref_logits.detach(), rtol=0, atol=1e-10)
        assert_same_parameters(ref_model, adapter.model)
    assert torch.equal(adapter.model.linear.weight, linear)


def test_without_a_named_classifier_the_last_module_with_parameters_is_frozen():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    params = {id(p) for p in extractor_parameters(net)}
    assert params == {id(p) for m in (net[0], net[1]) for p in m.parameters()}


def test_batch_of_one_is_refused_naming_the_reason_and_an_alternative():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    with pytest.raises(InputError, match=r"'shot-im' needs batches of at least 2 images \(with one image the "
                                         r"diversity term cancels the entropy term; use eta, sar or deyo"):
        tta.adapt(net, "shot-im")(torch.rand(1, 3, 8, 8))
