"""The entropy, consistency and teacher methods on GroupNorm models, on collapsing models and on
batches of one.

* GN/LN models keep their norms (stats="none") and SAR, ETA, DeYO and TENT adapt exactly the
  GroupNorm affine parameters, which move on confident batches; at batch size 1 they run.
* A model whose logits turn NaN never crashes a method: the update is skipped (parameters and
  optimizer untouched), the logits come back, and the collapse is counted.
* With BatchNorm (batch statistics), a batch of one is refused with the method, the reason and
  a fix in one line, or runs (tests/test_methods_contract.py checks every method).
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

import tta
from tta.errors import InputError

GN_METHODS = ["sar", "eta", "deyo", "tent"]
NEW = ["sar", "eta", "eata", "deyo", "shot-im", "rdumb", "roid", "cotta"]


def confident_gn_resnet() -> nn.Module:
    """ResNet-20 with GroupNorm, random weights, a scaled-up classifier: many confident predictions."""
    torch.manual_seed(0)
    model = tta.build_model("resnet20", norm="gn")
    with torch.no_grad():
        model.linear.weight.mul_(30)
    return model.eval()


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", GN_METHODS)
def test_gn_models_adapt_their_groupnorm_affine(name):
    model = confident_gn_resnet()
    a = tta.adapt(model, name, dataset="cifar10", channels_last=False)
    assert a.hparams()["stats"] == "none"
    gn = [m for m in a.model.modules() if isinstance(m, nn.GroupNorm)]
    trained = {id(p) for g in a.optimizer.param_groups for p in g["params"]}
    assert gn and trained == {id(p) for m in gn for p in (m.weight, m.bias)}
    before = [m.weight.detach().clone() for m in gn]
    for i in range(3):
        assert torch.isfinite(a(_images(16, i))).all()
    assert any(not torch.equal(m.weight, w) for m, w in zip(gn, before))  # they adapted
    assert all(not p.requires_grad for n, p in a.model.named_parameters() if "conv" in n)
    out = a(_images(1, 9))  # GroupNorm needs no batch: one image works
    assert out.shape == (1, 10) and torch.isfinite(out).all()


class Collapse(nn.Module):
    """Multiplies its input by ``factor`` (NaN once a test flips it): a model that has collapsed."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("factor", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def collapsing_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), Collapse(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10)).eval()


def _options(name: str, tmp_path) -> dict:
    if name != "eata":
        return {}
    path = tmp_path / "source.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8))
    return {"source_data": str(path), "fisher_samples": 16, "fisher_batch": 8}


@pytest.mark.parametrize("name", NEW)
def test_nan_logits_skip_the_update_and_are_returned(name, tmp_path):
    a = tta.adapt(collapsing_net(), name, **_options(name, tmp_path))
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a(x)
    for model in (a.model, a.teacher, getattr(a.memory, "anchor", None)):
        if model is not None:
            model[3].factor.fill_(float("nan"))
    params = [p.detach().clone() for p in a.model.parameters()]
    buf = io.BytesIO()
    torch.save(a.optimizer.state_dict(), buf)
    out = a(x)
    assert out.shape == (6, 10) and torch.isnan(out).all()  # returned, not raised
    assert int(a.memory.collapses) == 1
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), params))
    after = io.BytesIO()
    torch.save(a.optimizer.state_dict(), after)
    assert after.getvalue() == buf.getvalue()  # the optimizer did not step either


@pytest.mark.parametrize("name", NEW)
def test_batch_of_one_on_batchnorm_names_method_reason_and_fix(name, tmp_path):
    a = tta.adapt(collapsing_net(), name, **_options(name, tmp_path))
    with pytest.raises(InputError, match=rf"method '{name}' needs batches of at least 2 images \(.+\).*; use"):
        a(torch.rand(1, 3, 8, 8))
