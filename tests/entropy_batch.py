"""Shared real-data setup of the entropy-method tests: noisy CIFAR-10 batches and ResNet-20
configured as the reference codes configure it (train mode, BatchNorm on batch statistics)."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from conftest import to_tensor


def noisy_batches(cifar10_test, *, n_batches: int, batch_size: int, sigma: float = 0.12, seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """Consecutive test images with additive Gaussian noise (a CIFAR-10-C-like shift), in [0, 1]."""
    images, _ = cifar10_test
    x = to_tensor(np.asarray(images[: n_batches * batch_size]))
    g = torch.Generator().manual_seed(seed)
    x = (x + sigma * torch.randn(x.shape, generator=g)).clamp_(0, 1).to(dtype)
    return list(x.split(batch_size))


def reference_configured(model: nn.Module) -> nn.Module:
    """The reference ``configure_model``: train mode, grads off, BatchNorm2d on batch statistics
    with trainable affine parameters."""
    model.train()
    model.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.requires_grad_(True)
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
    return model


def twin_models(checkpoint, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, nn.Module]:
    """Two identical configured ResNet-20s: one for the reference transcription, one for tta."""
    import tta

    model = reference_configured(tta.load_model("resnet20", checkpoint=checkpoint).to(dtype))
    return model, copy.deepcopy(model)


def assert_params_equal(a: nn.Module, b: nn.Module, atol: float = 1e-10) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=lambda m, n=name: f"{n}: {m}")



def registered_parameters(model: nn.Module, method: str, checkpoint) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of ``model`` that ``tta.adapt(<the same ResNet-20>, method)`` trains, in its order."""
    import tta

    adapter = tta.adapt(tta.load_model("resnet20", checkpoint=checkpoint), method, dataset="cifar10")
    names = {id(p): n for n, p in adapter.model.named_parameters()}
    trained = [names[id(p)] for group in adapter.optimizer.param_groups for p in group["params"]]
    own = dict(model.named_parameters())
    return [(n, own[n]) for n in trained]
