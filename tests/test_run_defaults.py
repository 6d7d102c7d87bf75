"""`tta run` and `tta.adapt` resolve a method's defaults in the same place, so they build the same adapter."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tta
from tta import build_model
from tta.cli.main import cli


@pytest.fixture()
def data(tmp_path):
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("gaussian_noise", "shot_noise"):
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (5 * 20, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.arange(20) % 10, 5).astype(np.uint8))
    torch.manual_seed(0)
    ckpt = tmp_path / "rand20.pt"
    torch.save(build_model("resnet20").state_dict(), ckpt)
    return ["--data-dir", str(tmp_path), "--dataset", "cifar10", "--model", "resnet20", "--checkpoint", str(ckpt),
            "--domains", "gaussian_noise,shot_noise", "--batch-size", "20", "-q"]


@pytest.mark.parametrize("shift,options,K,lr", [
    ("mixed", ["-O", "stats=unmix-tns"], 128, 1e-5),            # composed policy's shift default + protocol lr
    ("continual", ["-O", "stats=unmix-tns"], 16, 1e-5),
    ("mixed", ["-O", "stats=unmix-tns", "-O", "lr=0.001"], 128, 1e-3),  # the user's lr wins
])
def test_cli_records_the_hparams_tta_adapt_builds(data, tmp_path, shift, options, K, lr):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["run", *data, "--method", "tent", "--shift", shift, *options,
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    recorded = json.loads(out.read_text())["method"]["hparams"]
    given = dict(o.split("=") for o in options[1::2])
    given = {k: (float(v) if k == "lr" else v) for k, v in given.items()}
    api = tta.adapt(build_model("resnet20"), "tent", dataset="cifar10", shift=shift, **given).hparams()
    assert recorded == api
    assert recorded["stats_options"]["K"] == K and recorded["lr"] == lr and recorded["optimizer"] == "adam"


@pytest.mark.parametrize("value,why", [("abc", "must be a number"), ("nan", "must be a number"),
                                       ("NaN", "must be a finite number"), ("Infinity", "must be a finite number")])
def test_cli_bad_option_values_are_one_line_errors_naming_option_and_fix(data, tmp_path, value, why):
    result = CliRunner().invoke(cli, ["run", *data, "--method", "tent", "-O", f"lr={value}",
                                      "--output", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    line = [ln for ln in result.output.splitlines() if "lr" in ln]
    assert line and f"option lr {why}" in line[0] and "pass e.g. lr=" in line[0]
