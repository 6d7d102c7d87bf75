"""An interrupted `tta run` resumes from its saved progress to exactly the uninterrupted result."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn
from click.testing import CliRunner

import memory_teacher_recipe
from tta import build_model
from tta.cli.main import cli
from tta.methods import METHODS, register_method


class Crash:
    """Counts adaptation steps and raises KeyboardInterrupt (Ctrl-C) at step ``at``."""

    at: int | None = None
    calls = 0

    @classmethod
    def arm(cls, at: int | None) -> None:
        cls.at, cls.calls = at, 0


def counting(step):
    def wrapped(adapter, x):
        Crash.calls += 1
        if Crash.at is not None and Crash.calls == Crash.at:
            raise KeyboardInterrupt
        return step(adapter, x)

    return wrapped


class _DriftMemory(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(10))


def _drift_step(adapter, x):
    """Logits shifted by a running mean of the logits seen (memory), plus noise from torch's global RNG."""
    logits = adapter.model(x)
    adapter.memory.mean.mul_(0.5).add_(0.5 * logits.mean(0))
    return logits - 3 * adapter.memory.mean + 0.01 * torch.randn(10)  # also exercises the saved RNG state


def _drift(model, opts):
    return opts.adapter(model.eval(), memory=_DriftMemory(), step=counting(_drift_step))


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    """Register the test methods only while these tests run, so other tests never see them."""
    register_method("test-drift", summary="test-only stateful adapter")(_drift)
    monkeypatch.setattr(memory_teacher_recipe, "_step", counting(memory_teacher_recipe._step))
    with memory_teacher_recipe.registered():
        yield
    del METHODS._items["test-drift"]  # noqa: SLF001


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
    return ["--data-dir", str(tmp_path), "--model", "resnet20", "--checkpoint", str(ckpt),
            "--domains", "gaussian_noise,shot_noise", "--batch-size", "8", "--checkpoint-every", "0", "-q"]


@pytest.fixture(params=["test-drift", memory_teacher_recipe.NAME])
def method(request):
    """A memory method, and one with memory, EMA teacher, optimizer moments and its own generator."""
    return ["--method", request.param]


def test_interrupted_run_resumes_to_the_same_result(setup, method, tmp_path):
    setup = [*setup, *method]
    runner = CliRunner()
    full = tmp_path / "full.json"
    Crash.arm(None)
    assert runner.invoke(cli, ["run", *setup, "--output", str(full)]).exit_code == 0

    out = tmp_path / "cut.json"
    partial = tmp_path / "cut.json.partial.pt"
    Crash.arm(11)  # Ctrl-C inside batch 11 of 16
    cut = runner.invoke(cli, ["run", *setup, "--output", str(out)])
    assert cut.exit_code != 0 and not out.exists() and partial.is_file()

    Crash.arm(None)
    resumed = runner.invoke(cli, ["run", *setup, "--output", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming at batch 10 of 16" in resumed.output
    assert Crash.calls == 6 and not partial.exists()
    a, b = json.loads(full.read_text()), json.loads(out.read_text())
    assert b["stream"]["resumed_at_batch"] == 10
    assert a["metrics"]["batch_errors"] == b["metrics"]["batch_errors"]
    assert a["metrics"]["domain_errors"] == b["metrics"]["domain_errors"]
    assert a["metrics"]["ece"] == pytest.approx(b["metrics"]["ece"])


def test_progress_of_another_run_is_ignored(setup, tmp_path):
    setup = [*setup, "--method", "test-drift"]
    runner = CliRunner()
    out = tmp_path / "r.json"
    Crash.arm(5)
    runner.invoke(cli, ["run", *setup, "--output", str(out)])
    assert (tmp_path / "r.json.partial.pt").is_file()
    Crash.arm(None)
    other_seed = runner.invoke(cli, ["run", *setup, "--output", str(out), "--seed", "1"])
    assert other_seed.exit_code == 0 and "resuming" not in other_seed.output
    assert Crash.calls == 16  # started over: the stream differs


def test_progress_survives_new_modification_times_but_not_new_content(setup, tmp_path):
    # a re-provisioned or re-extracted data folder gives the same images new times: the run resumes
    setup = [*setup, "--method", "test-drift"]
    runner = CliRunner()
    out = tmp_path / "r.json"
    folder = tmp_path / "CIFAR-10-C"
    Crash.arm(5)
    runner.invoke(cli, ["run", *setup, "--output", str(out)])
    for i, f in enumerate(sorted(folder.iterdir())):
        data = f.read_bytes()
        f.unlink()
        f.write_bytes(data)
        os.utime(f, ns=(10**18 + i, 10**18 + i))
    Crash.arm(None)
    resumed = runner.invoke(cli, ["run", *setup, "--output", str(out)])
    assert resumed.exit_code == 0 and "resuming at batch 4 of 16" in resumed.output, resumed.output
    assert Crash.calls == 12

    # the same names and shapes with other images: the saved progress belongs to other data
    Crash.arm(5)
    out = tmp_path / "r2.json"
    runner.invoke(cli, ["run", *setup, "--output", str(out)])
    assert (tmp_path / "r2.json.partial.pt").is_file()
    np.save(folder / "shot_noise.npy", np.random.default_rng(1).integers(0, 256, (5 * 60, 32, 32, 3), dtype=np.uint8))
    Crash.arm(None)
    other = runner.invoke(cli, ["run", *setup, "--output", str(out)])
    assert other.exit_code == 0 and "resuming" not in other.output, other.output
    assert Crash.calls == 16


def test_a_stopped_run_travels_between_processes_with_its_fields() -> None:
    # sweep workers hand exceptions back to the sweep by pickling them
    import pickle
    from pathlib import Path as _Path

    from tta.pipeline.evaluate import RunInterrupted
    from tta.pipeline.resume import RunStopped

    stop = RunStopped(RunInterrupted(7, 40), _Path("/x/run.partial.pt"))
    back = pickle.loads(pickle.dumps(stop))
    assert type(back) is RunStopped and str(back) == str(stop)
    assert (back.next_batch, back.total, back.partial) == (7, 40, _Path("/x/run.partial.pt"))
    inner = pickle.loads(pickle.dumps(RunInterrupted(3, 9)))
    assert (inner.next_batch, inner.total, str(inner)) == (3, 9, "interrupted before batch 3 of 9")
