"""Where `tta run` finds its data: one folder holding the clean set and its frost textures; no silent demo."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tta.cli.main import cli

from conftest import shared_path


@pytest.fixture()
def no_frost_elsewhere(monkeypatch):
    """Neither $TTA_FROST_DIR nor an imagecorruptions wheel: only the data folder can provide the textures."""
    monkeypatch.delenv("TTA_FROST_DIR", raising=False)
    monkeypatch.setattr("tta.corruptions.frost._from_wheel", lambda: None)


@pytest.mark.realdata
def test_frost_textures_inside_the_data_folder_need_no_flag(tmp_path, no_frost_elsewhere, resnet20_checkpoint):
    data = shared_path("data")  # cifar10/test_images.npy and frost/frost1.png ... side by side
    shared_path("data", "frost", "frost1.png")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, [
        "run", "-q", "--data-dir", str(data), "--domains", "frost,fog", "--n-examples", "20", "-b", "10",
        "--model", "resnet20", "--checkpoint", str(resnet20_checkpoint), "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [d["name"] for d in doc["stream"]["domains"]] == ["frost", "fog"]
    assert doc["metrics"]["num_samples"] == 40


@pytest.mark.realdata
def test_tta_corrupt_finds_frost_beside_the_clean_set(tmp_path, no_frost_elsewhere):
    src = shared_path("data", "cifar10", "test_images.npy")
    shared_path("data", "frost", "frost1.png")
    result = CliRunner().invoke(cli, ["corrupt", "--data-dir", str(src), "--output", str(tmp_path / "c"), "--domains",
                                      "frost", "--severities", "5", "--n-examples", "4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "frost.npy").is_file()


@pytest.mark.parametrize("how", ["flag", "flag+model", "env"])
def test_a_named_data_folder_without_data_is_an_error_not_the_demo(tmp_path, monkeypatch, how):
    monkeypatch.setattr("tta.data.resolve.network_available", lambda *a, **k: False)
    monkeypatch.setenv("TTA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TTA_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["run", "-q", "--domains", "fog", "-o", str(tmp_path / "r.json")]
    if how == "env":
        monkeypatch.setenv("TTA_DATA", str(empty))
    else:
        args += ["--data-dir", str(empty)]
    if how == "flag+model":
        args += ["--model", "resnet20", "--checkpoint", str(tmp_path / "w.th")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0, result.output
    assert f"No CIFAR-10-C data under {empty}" in result.output and "test_images.npy" in result.output
    assert "demo brings its own" not in result.output and not (tmp_path / "r.json").exists()


@pytest.fixture(scope="module")
def two_of_fifteen(tmp_path_factory):
    """A `tta corrupt` folder holding 2 of the 15 benchmark corruptions, from 20 real test images."""
    src = shared_path("data", "cifar10", "test_images.npy")
    out = tmp_path_factory.mktemp("two") / "CIFAR-10-C"
    result = CliRunner().invoke(cli, ["corrupt", "--data-dir", str(src), "--output", str(out), "--domains",
                                      "gaussian_noise,contrast", "--severities", "5", "--n-examples", "20"])
    assert result.exit_code == 0, result.output
    return out.parent


@pytest.mark.realdata
def test_tta_corrupt_folder_missing_benchmark_corruptions_needs_domains(two_of_fifteen, resnet20_checkpoint,
                                                                        tmp_path):
    args = ["run", "-q", "--data-dir", str(two_of_fifteen), "--model", "resnet20", "--checkpoint",
            str(resnet20_checkpoint), "-b", "10"]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a.json")])
    assert result.exit_code == 2, result.output
    assert "holds 2 of the 15 benchmark corruptions" in result.output
    assert "shot_noise" in result.output and "--domains gaussian_noise,contrast" in result.output
    result = CliRunner().invoke(cli, [*args, "--domains", "gaussian_noise,contrast", "-o", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b.json").read_text())["metrics"]["num_samples"] == 40
