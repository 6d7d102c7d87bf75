"""The trainer: few-step runs on a tiny synthetic set, resume, final checkpoint and record."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tta
from tta.cli.main import cli
from tta.errors import CheckpointError
from tta.training import TrainConfig, train
from tta.training.trainer import record_path, resume_path


def _cfg(tiny, out, **kw) -> TrainConfig:
    base = dict(model="resnet20", data=str(tiny / "train_images.npy"), out=str(out), norm="gn",
                epochs=2, batch_size=16, lr=0.05, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_resumed_run_equals_uninterrupted_run(tiny, tmp_path) -> None:
    straight = train(_cfg(tiny, tmp_path / "a" / "m.pt"), progress=False)
    cfg = _cfg(tiny, tmp_path / "b" / "m.pt")
    first = train(cfg, progress=False, stop_after=1)
    assert first["stopped_after_epoch"] == 1 and not (tmp_path / "b" / "m.pt").exists()
    resumed = train(cfg, progress=False, resume=True)
    a = torch.load(tmp_path / "a" / "m.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "m.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert _strip(resumed["history"]) == _strip(straight["history"])
    assert resumed["test_accuracy"] == straight["test_accuracy"]


def test_final_checkpoint_and_record(tiny, tmp_path) -> None:
    out = tmp_path / "gn.pt"
    record = train(_cfg(tiny, out, epochs=1), progress=False)
    saved = json.loads(record_path(out).read_text())
    assert saved["test_accuracy"] == record["test_accuracy"]
    assert saved["seed"] == 3 and saved["norm"] == "gn" and saved["epochs"] == 1
    assert saved["hyperparameters"]["weight_decay"] == 5e-4 and saved["hyperparameters"]["nesterov"] is True
    assert saved["train_images"] == 48 and saved["test_images"] == 20
    # the record's accuracy, recomputed independently from the saved checkpoint
    model = tta.load_model("resnet20", checkpoint=out, norm="gn")
    x = torch.from_numpy(np.load(tiny / "test_images.npy")).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(np.load(tiny / "test_labels.npy"))
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert saved["test_accuracy"] == pytest.approx(acc)
    # the resume file holds only tensors and plain containers
    state = torch.load(resume_path(out), weights_only=True)
    assert state["epoch"] == 1 and set(state) >= {"model", "optimizer", "scheduler", "generator", "torch_rng"}


def test_training_lowers_the_loss_with_bcn_ws(tiny, tmp_path) -> None:
    record = train(_cfg(tiny, tmp_path / "bcn.pt", norm="bcn", epochs=4, lr=0.1, schedule="cosine"), progress=False)
    losses = [h["train_loss"] for h in record["history"]]
    assert losses[-1] < losses[0]
    model = tta.load_model("resnet20", checkpoint=tmp_path / "bcn.pt", norm="bcn")
    assert type(model.conv1).__name__ == "WSConv2d"


def test_resume_refuses_a_different_config_or_missing_file(tiny, tmp_path) -> None:
    cfg = _cfg(tiny, tmp_path / "m.pt", epochs=2)
    with pytest.raises(CheckpointError, match="without --resume"):
        train(cfg, progress=False, resume=True)
    train(cfg, progress=False, stop_after=1)
    with pytest.raises(CheckpointError, match="lr=0.05"):
        train(replace(cfg, lr=0.2), progress=False, resume=True)


def test_cli_train_and_errors(tiny, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.pt"
    args = ["train", "--model", "resnet20", "--norm", "gn", "--norm-option", "num_groups=4", "--data-dir", str(tiny),
            "--epochs", "1", "--batch-size", "16", "--output", str(out), "--quiet"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "clean test accuracy" in result.output
    assert json.loads(record_path(out).read_text())["norm_options"] == {"num_groups": 4}
    bad = runner.invoke(cli, ["train", "--data-dir", str(tmp_path / "missing"), "--output", str(out)])
    assert bad.exit_code == 2 and bad.output.startswith("Error:") and bad.output.count("\n") == 1
    big = runner.invoke(cli, args[:-3] + ["--batch-size", "64", "--output", str(out)])
    assert big.exit_code == 2 and "lower --batch-size" in big.output
    opt = runner.invoke(cli, args[:5] + ["--norm-option", "groups"] + args[7:])
    assert opt.exit_code == 2 and "KEY=VALUE" in opt.output


@pytest.mark.realdata
def test_a_few_steps_on_the_shared_cifar10(tmp_path) -> None:
    from conftest import shared_path

    data = shared_path("data", "cifar10", "train_images.npy")
    record = train(
        TrainConfig(model="resnet20", data=str(data), out=str(tmp_path / "bn.pt"), epochs=1, batch_size=32,
                    limit_train=96, limit_test=200, seed=0),
        progress=False,
    )
    assert record["train_images"] == 96 and record["test_images"] == 200
    assert record["test_data"].endswith("test_images.npy")
    assert 0.0 <= record["test_accuracy"] <= 1.0
    assert np.isfinite(record["history"][0]["train_loss"])
