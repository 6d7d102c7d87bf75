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
    result = CliRunner().invoke(cli, ["corrupt", "--src", str(src), "--out", str(tmp_path / "c"), "--corruptions",
                                      "frost", "--severities", "5", "--n-images", "4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "frost.npy").is_file()
