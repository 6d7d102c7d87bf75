"""Default result names: readable, and never shared by two configurations (tta.pipeline.result_name)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tta.cli.main import cli
from tta.pipeline.result_name import config_digest, default_result_name
from tta.pipeline.results import configuration_of


def test_digest_ignores_key_order_and_sees_every_value():
    a = {"method": "tent", "hparams": {"lr": 0.001, "steps": 1}, "stream": "abc"}
    b = {"stream": "abc", "hparams": {"steps": 1, "lr": 0.001}, "method": "tent"}
    assert config_digest(a) == config_digest(b)
    assert len({config_digest(a), config_digest({**a, "stream": "abd"}),
                config_digest({**a, "hparams": {"lr": 0.002, "steps": 1}})}) == 3


def test_readable_part_names_the_setting_and_stays_a_plain_file_name():
    stream = {"delta": 0.1, "sorted": False, "n_examples": 200, "seed": 7}
    name = default_result_name(dataset="cifar10", model="resnet20", method="tent", shift="continual", stream=stream,
                               configuration={"x": 1})
    assert name.startswith("cifar10-resnet20-tent-continual-d0.1-n200-s7-") and name.endswith(".json")
    odd = default_result_name(dataset="cifar10", model="../m", method="a/b", shift="mixed", stream={"seed": 1},
                              configuration={})
    assert "/" not in odd and not odd.startswith(".")


@pytest.mark.realdata
def test_runs_differing_only_in_delta_write_two_files(small_cifar_c_dir, resnet20_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["run", "-q", "--data-dir", str(small_cifar_c_dir), "--model", "resnet20", "--checkpoint",
            str(resnet20_checkpoint), "--domains", "noise_low", "-b", "50", "--method", "source"]
    for extra in ([], ["--delta", "0.1"], ["--delta", "1"], ["--delta", "0.1"]):  # the last one repeats the second
        result = CliRunner().invoke(cli, base + extra)
        assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "tta-results").glob("*.json"))
    assert len(files) == 3, [f.name for f in files]
    names = [f.name for f in files]
    assert sum("-d0.1-" in n for n in names) == 1 and sum("-d1-" in n for n in names) == 1
    for f in files:  # the digest is the one notion of "same configuration" that guards --output
        doc = json.loads(f.read_text())
        assert f.stem.endswith("-" + config_digest(configuration_of(doc)))


@pytest.mark.realdata
def test_shift_at_delta_is_the_same_run_as_delta(small_cifar_c_dir, resnet20_checkpoint, tmp_path, monkeypatch):
    """`tta run --shift continual@0.1` is `--shift continual --delta 0.1`, as in `tta sweep --shifts`."""
    monkeypatch.chdir(tmp_path)
    base = ["run", "-q", "--data-dir", str(small_cifar_c_dir), "--model", "resnet20", "--checkpoint",
            str(resnet20_checkpoint), "--domains", "noise_low", "-b", "50", "--method", "tbn"]
    for shift in (["--shift", "continual@0.1"], ["--shift", "continual", "--delta", "0.1"]):
        result = CliRunner().invoke(cli, base + shift)
        assert result.exit_code == 0, result.output
    (only,) = (tmp_path / "tta-results").glob("*.json")
    doc = json.loads(only.read_text())
    assert doc["stream"]["delta"] == 0.1 and doc["stream"]["shift"] == "continual" and "-d0.1-" in only.name
