"""The statistics-only adapters' fast path (outside autograd: two-pass sums, one fused multiply-add per
layer) against their plain differentiable path, on the shared ResNet-20 and real CIFAR-10 images.

tests/test_methods_contract.py checks the same on a tiny random network; here the inputs are real,
class-sorted and noisy, the model is channels_last as the Adapter runs it on CPU, and the state carries
over three batches, so rounding that accumulates across layers and batches would show.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tta
from conftest import to_tensor

CASES = [
    ("tbn", {}), ("tbn", {"prior": 16.0}), ("tbn-ema", {"passes": 1}), ("tbn-ema", {}), ("alpha-bn", {}),
    ("adab2n", {}), ("momentum-decay", {}), ("rbn", {}), ("iabn", {}), ("unmix-tns", {"K": 16, "seed": 0}),
]


@pytest.fixture(scope="module")
def real_stream(cifar10_test) -> list[torch.Tensor]:
    images, _ = cifar10_test
    idx = np.arange(0, len(images), 50)[:192]  # class-sorted, as stored
    x = to_tensor(images[idx])
    x = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp_(0, 1)
    return list(x.split(64))


@pytest.mark.realdata
@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}{o or ''}" for n, o in CASES])
def test_fast_path_equals_autograd_path_on_real_stream(name, opts, real_stream, resnet20_checkpoint):
    model = tta.load_model("resnet20", checkpoint=resnet20_checkpoint)
    fast, exact = tta.adapt(model, name, **opts), tta.adapt(model, name, **opts)
    for x in real_stream:
        got = fast(x)
        xg = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        with torch.enable_grad():
            want = exact.adapt_forward(xg).detach()  # the differentiable path (forward would run no_grad)
        assert not got.requires_grad
        torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
        assert bool((got.argmax(1) == want.argmax(1)).float().mean() >= 0.99)
    state_fast, state_exact = fast.state_dict(), exact.state_dict()
    for k, v in state_fast.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            torch.testing.assert_close(v, state_exact[k], atol=1e-4, rtol=1e-4, msg=k)
