"""`tta run` on backbones trained with other norm layers: the norm comes from the training record."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tta
from tta.cli.main import cli
from tta.training import TrainConfig, record_path, train

from conftest import to_tensor

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def gn_checkpoint(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("gn") / "resnet20_gn.pt"
    train(TrainConfig(model="resnet20", data=str(tiny / "train_images.npy"), out=str(out), norm="gn",
                      norm_options={"num_groups": 8}, epochs=1, batch_size=16, lr=0.05, seed=0), progress=False)
    return out


def _run(*args):
    return CliRunner().invoke(cli, ["run", "-q", *args])


def _common(data_dir, ckpt, out):
    return ["--data-dir", str(data_dir), "--model", "resnet20", "--checkpoint", str(ckpt),
            "--domains", "noise_high", "--batch-size", "50", "--output", str(out)]


def test_run_reads_the_norm_from_the_training_record(small_cifar_c_dir, gn_checkpoint, tmp_path) -> None:
    out = tmp_path / "r.json"
    result = _run("--method", "source", *_common(small_cifar_c_dir, gn_checkpoint, out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["model"]["norm"] == "gn" and doc["model"]["norm_options"] == {"num_groups": 8}
    # source error recomputed here: the checkpoint loaded as GN with 8 groups, all severity-5 images
    folder = small_cifar_c_dir / "CIFAR-10-C"
    labels = np.load(folder / "labels.npy").astype(np.int64)
    n = len(labels) // 5
    images = np.load(folder / "noise_high.npy")[4 * n:]
    model = tta.load_model("resnet20", checkpoint=gn_checkpoint, norm="gn", num_groups=8)
    with torch.no_grad():
        pred = model(to_tensor(images)).argmax(1).numpy()
    expected = 100.0 * float(np.mean(pred != labels[4 * n:]))
    assert doc["metrics"]["domain_errors"]["noise_high"] == pytest.approx(expected)


def test_statistics_method_on_a_gn_backbone_is_a_clear_error(small_cifar_c_dir, gn_checkpoint, tmp_path) -> None:
    result = _run("--method", "tbn", *_common(small_cifar_c_dir, gn_checkpoint, tmp_path / "r.json"))
    assert result.exit_code == 2 and "BatchNorm" in result.output
    assert not (tmp_path / "r.json").exists()


def test_tent_adapts_a_gn_backbone(small_cifar_c_dir, gn_checkpoint, tmp_path) -> None:
    out = tmp_path / "tent.json"
    result = _run("--method", "tent", *_common(small_cifar_c_dir, gn_checkpoint, out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    # tent's default stats='tbn' needs BatchNorm; on GN it adapts the GN affine parameters instead
    assert doc["model"]["norm"] == "gn" and doc["method"]["hparams"]["stats"] == "none"
    assert "no BatchNorm" in result.output


def test_without_a_method_a_gn_backbone_runs_unadapted_and_the_result_says_why(small_cifar_c_dir, gn_checkpoint,
                                                                              tmp_path) -> None:
    """The default method (regime-aware) needs BatchNorm: a GN backbone runs as the source model, recorded as
    such, with a note; an --option then has no method to set and is refused before the run."""
    out = tmp_path / "r.json"
    result = _run(*_common(small_cifar_c_dir, gn_checkpoint, out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["method"]["name"] == "source"
    assert "regime-aware cannot run" in result.output and "pass --method" in result.output
    refused = _run("--option", "warmup=3", *_common(small_cifar_c_dir, gn_checkpoint, tmp_path / "r2.json"))
    assert refused.exit_code == 2 and "pass --method" in refused.output
    assert not (tmp_path / "r2.json").exists()


def test_without_a_record_the_mismatch_error_names_norm(small_cifar_c_dir, gn_checkpoint, tmp_path) -> None:
    lone = tmp_path / "lone.pt"
    lone.write_bytes(gn_checkpoint.read_bytes())
    assert not record_path(lone).exists()
    result = _run("--method", "source", *_common(small_cifar_c_dir, lone, tmp_path / "r.json"))
    assert result.exit_code == 2 and "--norm" in result.output
    ok = _run("--method", "source", "--norm", "gn", "--norm-option", "num_groups=8",
              *_common(small_cifar_c_dir, lone, tmp_path / "r2.json"))
    assert ok.exit_code == 0, ok.output
