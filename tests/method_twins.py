"""Shared setup of the registered-method fidelity tests: the shared ResNet-20 twice, once for an
independent transcription of the official step (configured as the reference configures it) and
once, untouched, for ``tta.adapt`` (whose statistics policy swaps its BatchNorm layers)."""
from __future__ import annotations

import copy

import torch
from torch import nn

import tta
from entropy_batch import reference_configured


def reference_and_adapter(checkpoint, method: str, dtype: torch.dtype = torch.float64, *,
                          configure=reference_configured, **options) -> tuple[nn.Module, tta.methods.Adapter]:
    model = tta.load_model("resnet20", checkpoint=checkpoint).to(dtype)
    ref = configure(copy.deepcopy(model))
    return ref, tta.adapt(model, method, dataset="cifar10", channels_last=False, **options)


def assert_same_parameters(ref: nn.Module, adapted: nn.Module, atol: float = 1e-10) -> None:
    """Every parameter of the adapter's student equals the reference's, name by name."""
    a, b = dict(ref.named_parameters()), dict(adapted.named_parameters())
    assert a.keys() == b.keys()
    for name, p in a.items():
        torch.testing.assert_close(b[name], p, rtol=0, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
