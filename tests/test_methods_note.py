"""``note`` through the registered adapter against an independent transcription of NOTE as the
UnMix-TNS fork runs it (IABN swapped into the pretrained BN model, PBRS, HLoss on the memory).

The reference (``RefNOTE``, ``RefPBRS``, ``RefIABN2d`` in ``test_note_parts``) is written from
the official files with Python lists; its ``random`` draws come from ``TorchRandom`` seeded
like the adapter's generator (``seed=``), so equal memories also prove equal draw order.
Both run in float64 through the adapter's registered step (``adapt_forward``; ``forward``
admits float32 images only).
Fed the same noisy real CIFAR-10 batches through the shared ResNet-20, outputs, IABN
running statistics, trained parameters and the memory (labels, order, samples) agree
over 240 samples: the memory fills, evicts and three updates fire, each mid-batch.
The UnMix-TNS composition is checked the same way.
"""
from __future__ import annotations

import copy

import pytest
import torch

import tta
from tta.methods import get_method, method_defaults
from conftest import to_tensor
from test_methods_rotta import RefUnMixTNS2d, assert_close_lists, components, ref_replace_bn_with_unmix
from test_note_parts import RefNOTE, RefPBRS, TorchRandom, assert_same_iabn, ref_hloss

N_IMAGES, BATCH = 240, 48


@pytest.fixture(scope="module")
def stream(cifar10_test):
    """240 real CIFAR-10 test images (every 37th, mixed classes) with Gaussian noise std 0.1."""
    images, _ = cifar10_test
    x = to_tensor(images[: 37 * N_IMAGES : 37])
    return (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)


@pytest.fixture(scope="module")
def resnet20(resnet20_checkpoint):
    return tta.load_model("resnet20", checkpoint=resnet20_checkpoint)


def check_memory(adapter, ref):
    data, cls, _ = ref.mem.get_memory()
    assert adapter.memory.bank.labels().tolist() == cls
    assert torch.equal(adapter.memory.bank.get_memory(), torch.stack(data))
    assert adapter.memory.bank.seen.tolist() == ref.mem.counter


@pytest.mark.realdata
def test_note_adapter_equals_the_fork_step_through_fill_eviction_and_updates(resnet20, stream):
    seed = 7
    x_all = stream.double()
    ref = RefNOTE(copy.deepcopy(resnet20).double(), 10, TorchRandom(seed))
    adapter = tta.adapt(copy.deepcopy(resnet20).double(), "note", seed=seed, channels_last=False)
    params = adapter.optimizer.param_groups[0]["params"]
    start = [p.detach().clone() for p in params]
    for b in range(N_IMAGES // BATCH):
        x = x_all[BATCH * b : BATCH * (b + 1)]
        want = ref.forward(x)
        got = adapter.adapt_forward(x)  # the registered step; forward itself refuses float64 input
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)  # eval-mode logits before any update
        check_memory(adapter, ref)
        assert_same_iabn(adapter.model, ref.model, 1e-9)
    assert int(adapter.memory.seen) == ref.current_instance == N_IMAGES
    assert len(adapter.memory) == 64 and sum(ref.mem.counter) == N_IMAGES  # full: 176 inserts evicted or were refused
    assert max(float((p - s).detach().abs().max()) for p, s in zip(params, start)) > 1e-4
    hp = adapter.hparams()
    assert (hp["optimizer"], hp["lr"], hp["memory_size"], hp["update_frequency"], hp["stats"]) == ("adam", 1e-3, 64, 64,
                                                                                                    "iabn")


class RefNOTEOverUnMix(RefNOTE):
    """RefNOTE on a model whose BatchNorms are already UnMix-TNS: no IABN, UnMix gamma, beta train."""

    def __init__(self, model, num_classes, rng, capacity=64, update_frequency=64, lr=1e-5):
        self.model = model
        params = [p.requires_grad_(True) for m in model.modules() if isinstance(m, RefUnMixTNS2d)
                  for p in (m.weight, m.bias)]
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.mem = RefPBRS(capacity, num_classes, rng)
        self.update_frequency = update_frequency
        self.current_instance = 0


@pytest.mark.realdata
def test_note_over_unmix_tns_equals_the_fork_composition(resnet20, stream):
    seed, K = 7, 4
    x_all = stream.double()
    model = copy.deepcopy(resnet20).double()
    ref_model = ref_replace_bn_with_unmix(copy.deepcopy(model).requires_grad_(False), K, seed=0, momentum=0.1)
    ref = RefNOTEOverUnMix(ref_model, 10, TorchRandom(seed))
    adapter = tta.adapt(model, "note", stats="unmix-tns", dataset="cifar10", seed=seed, channels_last=False,
                        stats_options={"K": K, "seed": 0, "batch_size": 64})
    assert adapter.hparams()["lr"] == 1e-5 and adapter.hparams()["optimizer"] == "adam"  # the fork's run.sh
    assert not any(type(m).__name__ == "InstanceAwareBatchNorm" for m in adapter.model.modules())
    for b in range(3):  # 144 samples: updates at 64 and 128, mid-batch
        x = x_all[BATCH * b : BATCH * (b + 1)]
        torch.testing.assert_close(adapter.adapt_forward(x), ref.forward(x), atol=1e-9, rtol=1e-9)  # float64
        check_memory(adapter, ref)
        assert_close_lists(components(adapter.model), components(ref.model), 1e-9)
    for p_s, p_r in zip(adapter.model.parameters(), ref.model.parameters()):
        torch.testing.assert_close(p_s, p_r, atol=1e-9, rtol=1e-9)


def test_note_imagenet_defaults_are_the_fork_config():
    d = method_defaults("note", dataset="imagenet")
    assert (d["optimizer"], d["lr"], d["nesterov"], d["memory_size"], d["update_frequency"]) == ("sgd", 1e-5, True,
                                                                                                  16, 16)
    assert method_defaults("note", dataset="imagenet", shift="mixed")["stats"] == "iabn"
    v = get_method("note").resolve({"stats": "unmix-tns"}, {"dataset": "imagenet", "shift": "mixed"})
    assert (v["optimizer"], v["lr"], v["stats_options"]["K"], v["stats_options"]["batch_size_max"]) == (
        "sgd", 2.5e-6, 128, 16)


def test_hloss_is_a_mean_over_all_entries():
    z = torch.randn(5, 7, dtype=torch.float64)
    p = z.softmax(1)
    torch.testing.assert_close(ref_hloss(z), (-(p * (p + 1e-6).log()).sum(1)).mean() / 7)


@pytest.mark.realdata
def test_iabn_method_is_inference_only(resnet20, stream):
    a = tta.adapt(resnet20, "iabn")
    before = copy.deepcopy(a.state_dict())
    out1, out2 = a(stream[:20]), a(stream[:20])
    assert torch.equal(out1, out2)  # eval-mode IABN changes nothing
    after = a.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items() if isinstance(v, torch.Tensor) and k != "steps")
