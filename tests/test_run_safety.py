"""Faults around a run: resuming on other data, two runs on one output, SIGINT/SIGTERM, bad progress files, file modes."""
from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import signal
import stat

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tta import atomic, build_model
from tta.cli.main import cli
from tta.methods import METHODS, Adapter, register_method


class _Signals:
    """Settings of a stateful test method that sends this process a signal inside its ``signal_at``-th call."""

    name = "test-signals"
    signal_at: int | None = None
    signum = signal.SIGINT
    calls = 0


class _Mean(nn.Module):
    """The method's state: a running mean of the logits, a buffer so it is saved and restored."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(10))


def _step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    _Signals.calls += 1
    if _Signals.calls == _Signals.signal_at:
        os.kill(os.getpid(), _Signals.signum)  # arrives mid-batch, like a Ctrl-C
    logits = adapter.model(x)
    adapter.memory.mean.mul_(0.5).add_(0.5 * logits.mean(0))
    return logits - 3 * adapter.memory.mean


@pytest.fixture(autouse=True)
def _registered():
    register_method(_Signals.name, summary="test-only stateful adapter")(
        lambda model, opts: opts.adapter(model, step=_step, memory=_Mean()))
    _Signals.signal_at, _Signals.calls, _Signals.signum = None, 0, signal.SIGINT
    yield
    del METHODS._items[_Signals.name]  # noqa: SLF001


def _data(root, seed):
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    np.save(folder / "gaussian_noise.npy", rng.integers(0, 256, (5 * 48, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.arange(48) % 10, 5).astype(np.uint8))
    return root


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "rand20.pt"
    torch.save(build_model("resnet20").state_dict(), ckpt)
    a, b = _data(tmp_path / "a", 0), _data(tmp_path / "b", 1)
    common = ["--model", "resnet20", "--checkpoint", str(ckpt), "--domains", "gaussian_noise", "--batch-size", "8",
              "--checkpoint-every", "1000", "-q"]
    return a, b, common


def _run(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


@pytest.mark.parametrize("signum,workers", [(signal.SIGINT, 0), (signal.SIGTERM, 0), (signal.SIGINT, 2)])
def test_a_signal_saves_progress_and_the_rerun_resumes_exactly(setup, tmp_path, signum, workers):
    """With DataLoader workers too: the stop shuts them down (no child process is left) and the
    resumed run still equals the uninterrupted one."""
    a, _, common = setup
    common = [*common, "--loader-workers" if workers else "--workers", workers]  # the two spellings
    before = signal.getsignal(signal.SIGINT)
    full = tmp_path / "full.json"
    assert _run("--data-dir", a, *common, "--method", "test-signals", "--output", full).exit_code == 0
    out, partial = tmp_path / "cut.json", tmp_path / "cut.json.partial.pt"
    _Signals.signal_at, _Signals.calls, _Signals.signum = 3, 0, signum
    cut = _run("--data-dir", a, *common, "--method", "test-signals", "--output", out)
    assert cut.exit_code == 130, cut.output
    assert "stopped before batch 3 of 6; progress saved to" in cut.output and "Rerun the same command" in cut.output
    assert partial.is_file() and not out.exists()
    _Signals.signal_at, _Signals.calls = None, 0
    resumed = _run("--data-dir", a, *common, "--method", "test-signals", "--output", out)
    assert resumed.exit_code == 0 and "resuming at batch 3 of 6" in resumed.output and _Signals.calls == 3
    x, y = json.loads(full.read_text()), json.loads(out.read_text())
    assert x["metrics"]["batch_errors"] == y["metrics"]["batch_errors"]
    assert x["metrics"]["ece"] == pytest.approx(y["metrics"]["ece"])
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored (SIG_IGN when pytest runs in the background)
    assert not multiprocessing.active_children()  # no loader worker outlives its run


def test_progress_saved_on_one_dataset_is_not_resumed_on_another(setup, tmp_path, caplog):
    a, b, common = setup
    out = tmp_path / "r.json"
    _Signals.signal_at = 3
    assert _run("--data-dir", a, *common, "--method", "test-signals", "--output", out).exit_code == 130
    _Signals.signal_at, _Signals.calls = None, 0
    other = _run("--data-dir", b, *common, "--method", "test-signals", "--output", out)
    assert other.exit_code == 0 and "resuming" not in other.output and _Signals.calls == 6
    assert "belongs to a different run" in caplog.text
    ref = tmp_path / "ref.json"
    _Signals.calls = 0
    assert _run("--data-dir", b, *common, "--method", "test-signals", "--output", ref).exit_code == 0
    assert json.loads(out.read_text())["metrics"]["batch_errors"] == json.loads(ref.read_text())["metrics"]["batch_errors"]


def test_a_malformed_progress_file_is_reported_and_ignored(setup, tmp_path, caplog):
    a, _, common = setup
    out, partial = tmp_path / "r.json", tmp_path / "r.json.partial.pt"
    _Signals.signal_at = 3
    assert _run("--data-dir", a, *common, "--method", "test-signals", "--output", out).exit_code == 130
    state = torch.load(partial, weights_only=True)
    state["adapter"] = {"mean": torch.zeros(3)}  # right key, wrong content
    torch.save(state, partial)
    _Signals.signal_at, _Signals.calls = None, 0
    rerun = _run("--data-dir", a, *common, "--method", "test-signals", "--output", out)
    assert rerun.exit_code == 0, rerun.output
    assert "ignoring malformed progress file" in caplog.text and _Signals.calls == 6
    torch.save([1, 2, 3], partial)  # not a dict at all
    again = _run("--data-dir", a, *common, "--method", "test-signals", "--output", out)
    assert again.exit_code == 0 and "not a tta progress file" in caplog.text


def test_a_second_run_on_a_locked_output_is_refused(setup, tmp_path):
    a, _, common = setup
    out = tmp_path / "r.json"
    with open(tmp_path / "r.json.lock", "w") as held:  # what a running `tta run` holds
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = _run("--data-dir", a, *common, "--output", out)
    assert busy.exit_code == 2 and "another tta run is writing" in busy.output and not out.exists()
    assert _run("--data-dir", a, *common, "--output", out).exit_code == 0  # released
    assert not (tmp_path / "r.json.lock").exists()


def test_a_result_of_another_configuration_is_not_overwritten_silently(setup, tmp_path):
    a, _, common = setup
    out = tmp_path / "r.json"
    assert _run("--data-dir", a, *common, "--method", "source", "--output", out).exit_code == 0
    before = out.read_text()
    other = _run("--data-dir", a, *common, "--method", "tbn", "--output", out)
    assert other.exit_code == 2 and "another configuration (method, hparams differ)" in other.output
    assert out.read_text() == before
    same = _run("--data-dir", a, *common, "--method", "source", "--output", out)
    assert same.exit_code == 0 and "replacing" in same.output and "same configuration" in same.output
    forced = _run("--data-dir", a, *common, "--method", "tbn", "--overwrite", "--output", out)
    assert forced.exit_code == 0 and json.loads(out.read_text())["method"]["name"] == "tbn"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        for path, write in ((tmp_path / "r.json", lambda p: atomic.write_json(p, {})),
                            (tmp_path / "a.npy", lambda p: atomic.save_npy(p, np.zeros(2)))):
            write(path)
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    finally:
        os.umask(old)
