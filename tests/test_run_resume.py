"""An interrupted `tta run` resumes from its saved progress to exactly the uninterrupted result."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tta import build_model
from tta.cli.main import cli
from tta.methods import METHODS, Adapter, register_method


class _Drift(Adapter):
    """A stateful test method: logits are shifted by a running mean of the inputs it has seen."""

    name = "test-drift"
    summary = "test-only stateful adapter"
    crash_at: int | None = None
    calls = 0

    def __init__(self, model, *, channels_last=None):
        super().__init__(model, channels_last=channels_last)
        self.register_buffer("mean", torch.zeros(10))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.snapshot()

    def adapt_forward(self, x):
        type(self).calls += 1
        if type(self).crash_at is not None and type(self).calls == type(self).crash_at:
            raise KeyboardInterrupt
        logits = self.model(x)
        self.mean.mul_(0.5).add_(0.5 * logits.mean(0))
        self.steps += 1
        return logits - 3 * self.mean + 0.01 * torch.randn(10)  # also exercises the saved RNG state


@pytest.fixture(autouse=True)
def _registered():
    """Register the test method only while these tests run, so other tests never see it."""
    register_method(_Drift)
    yield
    del METHODS._items[_Drift.name]  # noqa: SLF001


@pytest.fixture()
def setup(tmp_path):
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("gaussian_noise", "shot_noise"):
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (5 * 60, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.arange(60) % 10, 5).astype(np.uint8))
    torch.manual_seed(0)
    ckpt = tmp_path / "rand20.pt"
    torch.save(build_model("resnet20").state_dict(), ckpt)
    return ["--data-dir", str(tmp_path), "--model", "resnet20", "--checkpoint", str(ckpt), "--method", "test-drift",
            "--domains", "gaussian_noise,shot_noise", "--batch-size", "8", "--checkpoint-every", "0", "-q"]


def test_interrupted_run_resumes_to_the_same_result(setup, tmp_path):
    runner = CliRunner()
    full = tmp_path / "full.json"
    _Drift.crash_at, _Drift.calls = None, 0
    assert runner.invoke(cli, ["run", *setup, "--output", str(full)]).exit_code == 0

    out = tmp_path / "cut.json"
    partial = tmp_path / "cut.json.partial.pt"
    _Drift.crash_at, _Drift.calls = 11, 0  # Ctrl-C inside batch 11 of 16
    cut = runner.invoke(cli, ["run", *setup, "--output", str(out)])
    assert cut.exit_code != 0 and not out.exists() and partial.is_file()

    _Drift.crash_at, _Drift.calls = None, 0
    resumed = runner.invoke(cli, ["run", *setup, "--output", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming at batch 10 of 16" in resumed.output
    assert _Drift.calls == 6 and not partial.exists()
    a, b = json.loads(full.read_text()), json.loads(out.read_text())
    assert b["stream"]["resumed_at_batch"] == 10
    assert a["metrics"]["batch_errors"] == b["metrics"]["batch_errors"]
    assert a["metrics"]["domain_errors"] == b["metrics"]["domain_errors"]
    assert a["metrics"]["ece"] == pytest.approx(b["metrics"]["ece"])


def test_progress_of_another_run_is_ignored(setup, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.json"
    _Drift.crash_at, _Drift.calls = 5, 0
    runner.invoke(cli, ["run", *setup, "--output", str(out)])
    assert (tmp_path / "r.json.partial.pt").is_file()
    _Drift.crash_at, _Drift.calls = None, 0
    other_seed = runner.invoke(cli, ["run", *setup, "--output", str(out), "--seed", "1"])
    assert other_seed.exit_code == 0 and "resuming" not in other_seed.output
    assert _Drift.calls == 16  # started over: the stream differs
