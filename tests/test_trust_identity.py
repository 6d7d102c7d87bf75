"""Identity: a saved run, a result and a sweep cell are matched by everything that fixes their numbers.

Batch size, the shift's resets (iid and continual can share one order) and the data's content are part
of the stream fingerprint, so progress of one is never resumed as another (#32 rows 1, 2), a sweep store
never reports a cell on other data as done (row 3), and ``-o`` never replaces another configuration's
result as "the same configuration" (row 7).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tta import build_model
from tta.cli.main import cli
from tta.pipeline.config import RunConfig
from tta.pipeline.prepare import prepare_stream
from tta.methods import METHODS, register_method
from tta.sweep.dispatch import plan

N = 40  # images per severity


class _Cut:
    at: int | None = None
    calls = 0


class _Mean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(10))


def _step(adapter, x):
    _Cut.calls += 1
    if _Cut.calls == _Cut.at:
        raise KeyboardInterrupt  # Ctrl-C inside this batch
    logits = adapter.model(x)
    adapter.memory.mean.mul_(0.5).add_(0.5 * logits.mean(0))
    return logits - adapter.memory.mean


@pytest.fixture(autouse=True)
def _registered():
    register_method("test-cut", summary="test-only stateful adapter")(
        lambda model, opts: opts.adapter(model.eval(), step=_step, memory=_Mean()))
    _Cut.at, _Cut.calls = None, 0
    yield
    del METHODS._items["test-cut"]  # noqa: SLF001


def _data(root, seed):
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in ("gaussian_noise", "fog"):
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (5 * N, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.arange(N) % 10, 5).astype(np.uint8))
    return root


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "rand20.pt"
    torch.save(build_model("resnet20").state_dict(), ckpt)
    data = _data(tmp_path / "d0", 0)
    common = ["--method", "test-cut", "--dataset", "cifar10", "--model", "resnet20", "--checkpoint", str(ckpt),
              "--domains", "gaussian_noise,fog", "--checkpoint-every", "0", "-q"]
    return data, common


def _run(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


def _cut_then_rerun(setup, tmp_path, first: list[str], second: list[str]):
    data, common = setup
    out = tmp_path / "x.json"
    _Cut.at = 4
    cut = _run(*common, "--data-dir", data, *first, "-o", out)
    assert cut.exit_code != 0 and (tmp_path / "x.json.partial.pt").is_file(), cut.output
    _Cut.at, _Cut.calls = None, 0
    return _run(*common, "--data-dir", data, *second, "-o", out), out


# -- row 1: batch size -------------------------------------------------------------------------------------
def test_progress_of_another_batch_size_is_not_resumed(setup, tmp_path):
    rerun, out = _cut_then_rerun(setup, tmp_path, ["-b", "16"], ["-b", "8"])
    assert rerun.exit_code == 0, rerun.output
    assert "resuming" not in rerun.output
    doc = json.loads(out.read_text())
    assert doc["metrics"]["num_samples"] == 2 * N == doc["stream"]["num_samples"]  # not 472 of 400
    assert _Cut.calls == len(doc["metrics"]["batch_errors"]) == 2 * N // 8


# -- row 2: iid and continual share an order, not a fingerprint -------------------------------------------
def test_progress_of_a_continual_run_is_not_resumed_as_iid(setup, tmp_path):
    rerun, out = _cut_then_rerun(setup, tmp_path, ["-b", "8", "--shift", "continual"], ["-b", "8", "--shift", "iid"])
    assert rerun.exit_code == 0, rerun.output
    assert "resuming" not in rerun.output
    assert json.loads(out.read_text())["stream"]["shift"] == "iid"
    assert _Cut.calls == 2 * N // 8


def test_progress_of_an_fp32_run_is_not_resumed_under_bf16(setup, tmp_path):
    """Autocast precision changes the numbers: it is part of the resume key (and of the configuration)."""
    rerun, out = _cut_then_rerun(setup, tmp_path, ["-b", "8"], ["-b", "8", "--precision", "bf16"])
    assert rerun.exit_code == 0, rerun.output
    assert "resuming" not in rerun.output
    assert json.loads(out.read_text())["runtime"]["config"]["precision"] == "bf16"
    assert _Cut.calls == 2 * N // 8


def test_iid_and_continual_on_one_order_have_different_fingerprints(setup):
    data, _ = setup
    common = dict(dataset="cifar10", data_dir=str(data), domains=["gaussian_noise", "fog"], batch_size=8)
    _, _, iid, _ = prepare_stream(RunConfig(shift="iid", **common))
    _, _, cont, _ = prepare_stream(RunConfig(shift="continual", **common))
    _, _, cont4, _ = prepare_stream(RunConfig(shift="continual", **{**common, "batch_size": 4}))
    assert iid.order.fingerprint() == cont.order.fingerprint()  # the same samples in the same order...
    assert len({iid.fingerprint(), cont.fingerprint(), cont4.fingerprint()}) == 3  # ...but not the same stream


# -- row 3: the data's content is part of a sweep cell's id -------------------------------------------------
def test_a_sweep_cell_on_other_images_is_another_cell_and_the_same_images_elsewhere_the_same(tmp_path):
    a, b = _data(tmp_path / "a", 0), _data(tmp_path / "b", 1)  # like two `tta corrupt --seed` folders
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)

    def cid(folder):
        cfg = RunConfig(method="source", dataset="cifar10", data_dir=str(folder), domains=["gaussian_noise"],
                        batch_size=8, n_examples=20)
        return plan([cfg])[0].id

    assert cid(a) != cid(b)
    assert cid(a) == cid(copy)  # content, not the path


def test_other_labels_beside_the_same_images_change_the_fingerprint(tmp_path):
    a = _data(tmp_path / "a", 0)
    cfg = RunConfig(dataset="cifar10", data_dir=str(a), domains=["gaussian_noise"], batch_size=8)
    before = prepare_stream(cfg)[2].fingerprint()
    np.save(a / "CIFAR-10-C" / "labels.npy", np.tile((np.arange(N) + 1) % 10, 5).astype(np.uint8))
    assert prepare_stream(cfg)[2].fingerprint() != before


# -- row 7: "the same configuration" on -o -----------------------------------------------------------------
@pytest.mark.parametrize("change", [["-b", "4"], ["--shift", "iid"], ["--precision", "bf16"]],
                         ids=["batch size", "iid", "bf16"])
def test_another_batch_size_or_shift_is_not_replaced_as_the_same_configuration(setup, tmp_path, change):
    data, common = setup
    out = tmp_path / "x.json"
    assert _run(*common, "--data-dir", data, "-b", "8", "-o", out).exit_code == 0
    before = out.read_text()
    again = _run(*common, "--data-dir", data, "-b", "8", *change, "-o", out)
    assert again.exit_code != 0 and "another configuration" in again.output, again.output
    assert out.read_text() == before
    same = _run(*common, "--data-dir", data, "-b", "8", "-o", out)
    assert same.exit_code == 0 and "same configuration" in same.output, same.output
