"""Mixed precision (``precision="bf16"``/``"fp16"``): every method under bf16 autocast on CPU stays close
to float32 on a short real stream, and the option reaches ``tta run``'s recorded configuration.

Tolerance (bf16 keeps 8 bits of mantissa, so logits move by about 1 % of their size per layer stack): over
three batches of 32 noisy CIFAR-10 test images through the shared ResNet-20, the mean absolute logit
difference is at most 6 % of the mean absolute float32 logit, and at least 90 % of the images keep their
predicted class. Measured: 0.2-4.4 % and 94-100 % (CoTTA, whose teacher averages augmented views and
whose anchor gates them, is the widest).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tta
from conftest import to_tensor
from tta.errors import InputError
from tta.methods import METHODS

#: options that keep a method short or let it build (EATA needs clean source images, written per test)
FAST = {"cotta": {"n_augmentations": 4}}


@pytest.fixture(scope="module")
def stream(cifar10_test) -> list[torch.Tensor]:
    images, _ = cifar10_test
    x = to_tensor(images[np.arange(0, len(images), 97)[:96]])
    x = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp_(0, 1)
    return list(x.split(32))


@pytest.fixture(scope="module")
def model(resnet20_checkpoint):
    return tta.load_model("resnet20", checkpoint=resnet20_checkpoint)


def _run(model, name: str, xs: list[torch.Tensor], precision: str, **opts) -> torch.Tensor:
    torch.manual_seed(0)
    adapter = tta.adapt(model, name, precision=precision, **opts)
    return torch.cat([adapter(x) for x in xs])


@pytest.mark.realdata
@pytest.mark.parametrize("group", [
    sorted(n for n in METHODS if not tta.methods.get_method(n).needs_grad),
    sorted(n for n in METHODS if tta.methods.get_method(n).needs_grad and n not in ("cotta", "eata")),
    ["cotta", "eata"],
], ids=["no-grad", "gradient", "teacher-fisher"])
def test_bf16_stays_close_to_fp32_on_a_real_stream(group, model, stream, cifar10_test, tmp_path):
    source = tmp_path / "source.npy"
    np.save(source, np.asarray(cifar10_test[0][:64]))
    for name in group:
        opts = {**FAST.get(name, {}), **({"source_data": str(source), "fisher_samples": 64} if name == "eata" else {})}
        full, half = _run(model, name, stream, "fp32", **opts), _run(model, name, stream, "bf16", **opts)
        assert half.dtype == torch.float32 and half.shape == full.shape, name
        rel = float((half - full).abs().mean() / full.abs().mean())
        agree = float((half.argmax(1) == full.argmax(1)).float().mean())
        assert rel <= 0.06 and agree >= 0.90, (name, rel, agree)
        assert rel > 0, name  # bf16 really ran: float32 would give identical logits


def test_fp16_on_cpu_and_unknown_precisions_are_clear_errors():
    from test_methods_stats import tiny_net
    with pytest.raises(InputError, match="fp16 needs a CUDA GPU.*use bf16 on CPU"):
        tta.adapt(tiny_net(), "tbn", precision="fp16")
    with pytest.raises(InputError, match="precision must be one of fp32, bf16, fp16"):
        tta.adapt(tiny_net(), "tbn", precision="fp64")


def test_precision_is_recorded_and_the_default_keeps_sweep_cell_ids(tmp_path):
    from tta.pipeline.config import RunConfig
    from tta.pipeline.orchestrator import run
    from tta.sweep.cells import identity, rerun_command

    doc = run(RunConfig(method="tbn", dataset="demo", n_examples=20, batch_size=10, precision="bf16"), tmp_path / "r.json").doc
    assert doc["runtime"]["config"]["precision"] == "bf16"
    assert "precision" not in identity(RunConfig(method="tbn"), "cifar10", None)  # cells from before keep their ids
    assert identity(RunConfig(method="tbn", precision="bf16"), "cifar10", None)["precision"] == "bf16"
    assert "--precision bf16" in rerun_command(RunConfig(method="tbn", precision="bf16"))
