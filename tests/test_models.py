"""Backbones: architecture, checkpoint loading and its error messages."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tta
from tta.errors import CheckpointError, UnknownNameError
from tta.models import MODELS

from conftest import shared_path, to_tensor


def _accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            x = to_tensor(images[i : i + batch]).contiguous(memory_format=torch.channels_last)
            correct += int((model(x).argmax(1).numpy() == labels[i : i + batch]).sum())
    return 100.0 * correct / len(labels)


@pytest.mark.realdata
@pytest.mark.parametrize("name, expected", [("resnet20", 81.03), ("resnet56", 83.20)])
def test_shared_checkpoint_accuracy(name, expected, cifar10_test):
    """The shared akamaster checkpoints reach the accuracy measured in models/README.md."""
    ckpt = shared_path("models", "cifar10", f"{name}.th")
    model = tta.load_model(name, checkpoint=ckpt).to(memory_format=torch.channels_last)
    assert not model.training
    images, labels = cifar10_test
    assert abs(_accuracy(model, images, labels) - expected) <= 0.05


@pytest.mark.parametrize(
    "name, params",
    # Parameter counts of RobustBench's Standard WRN-28-10 and Hendrycks2020AugMix_ResNeXt
    # (specs/corruptions-and-robustbench.md §5) and torchvision's resnet50.
    [("wrn-28-10", 36_479_194), ("resnext-29", 6_900_132), ("resnet50", 25_557_032)],
)
def test_reference_architectures_build_offline(name, params):
    model = tta.build_model(name)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("name", ["wrn-28-10", "resnext-29", "resnet20"])
def test_state_dict_round_trips_through_load_model(name, tmp_path):
    torch.manual_seed(0)
    model = tta.build_model(name).eval()
    for m in model.modules():  # non-trivial statistics so a skipped buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = tta.load_model(name, checkpoint=path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_resnext_accepts_checkpoint_without_normalization_buffers(tmp_path):
    """RobustBench loads Hendrycks2020AugMix_ResNeXt non-strictly when mu/sigma are absent."""
    state = {k: v for k, v in tta.build_model("resnext-29").state_dict().items() if k not in ("mu", "sigma")}
    torch.save(state, tmp_path / "augmix.pt")
    model = tta.load_model("resnext-29", checkpoint=tmp_path / "augmix.pt")
    assert torch.all(model.mu == 0.5) and torch.all(model.sigma == 0.5)


def test_robustbench_names_resolve_to_the_same_backbones():
    assert tta.models.resolve_model_name("Standard").name == "wrn-28-10"
    assert tta.models.resolve_model_name("Hendrycks2020AugMix_ResNeXt").name == "resnext-29"
    assert tta.models.resolve_model_name("Standard_R50").name == "resnet50"


def test_robustbench_cache_layout_loads_offline(tmp_path):
    model = tta.build_model("wrn-28-10")
    path = tmp_path / "cifar10" / "corruptions" / "Standard.pt"
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    loaded = tta.load_model("Standard", model_dir=tmp_path)
    assert torch.equal(loaded.fc.weight, model.fc.weight)


# -- bad inputs -------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as exc:
        tta.load_model("resnet20", checkpoint=tmp_path / "nope.th")
    assert "does not exist" in _one_line(exc) and "nope.th" in str(exc.value)


def test_truncated_checkpoint(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(tta.build_model("resnet20").state_dict(), good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError) as exc:
        tta.load_model("resnet20", checkpoint=bad)
    assert "corrupt or truncated" in _one_line(exc) and "bad.pt" in str(exc.value)


def test_wrong_architecture_names_the_mismatch(tmp_path):
    path = tmp_path / "r56.pt"
    torch.save(tta.build_model("resnet56").state_dict(), path)
    with pytest.raises(CheckpointError) as exc:
        tta.load_model("resnet20", checkpoint=path)
    msg = _one_line(exc)
    assert "unexpected keys" in msg and "layer1.3" in msg


def test_shape_mismatch_is_reported(tmp_path):
    state = tta.build_model("resnet20").state_dict()
    state["linear.weight"] = torch.zeros(100, 64)
    state["linear.bias"] = torch.zeros(100)
    torch.save(state, tmp_path / "c100.pt")
    with pytest.raises(CheckpointError) as exc:
        tta.load_model("resnet20", checkpoint=tmp_path / "c100.pt")
    assert "linear.weight: checkpoint (100, 64) vs model (10, 64)" in _one_line(exc)


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tta.build_model("resnet20").state_dict(), "cfg": object()}, path)
    with pytest.raises(CheckpointError) as exc:
        tta.load_model("resnet20", checkpoint=path)
    assert "refuses to unpickle" in _one_line(exc)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as exc:
        tta.load_model("resnet1000")
    assert "resnet20" in _one_line(exc)


def test_no_pretrained_weights_says_what_to_pass(tmp_path):
    with pytest.raises(CheckpointError) as exc:
        tta.load_model("wrn-28-10", model_dir=tmp_path)
    msg = _one_line(exc)
    assert "Standard.pt" in msg and "checkpoint=" in msg


def test_every_registered_model_builds_in_eval_mode_with_random_weights():
    for name in MODELS:
        assert not tta.load_model(name, pretrained=False).training


def test_batchnorm_options_are_applied_not_ignored():
    model = tta.build_model("resnet20", norm="bn", momentum=0.01, eps=1e-3)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)
