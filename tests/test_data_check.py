"""`tta data check` reports each file of a CIFAR-C folder."""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from tta.cli.main import cli
from tta.data.check import check_cifar_c
from tta.data.domain_source import BENCHMARK_CORRUPTIONS


def _folder(tmp_path, names):
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    for n in names:
        np.save(folder / f"{n}.npy", np.zeros((10, 4, 4, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.arange(2), 5))
    return folder


def test_check_lists_present_missing_and_broken(tmp_path):
    folder = _folder(tmp_path, ["fog", "snow", "speckle_noise"])
    (folder / "snow.npy").write_bytes((folder / "snow.npy").read_bytes()[:-7])
    rows = {name: (ok, detail) for name, ok, detail in check_cifar_c(tmp_path)}
    assert rows["fog.npy"] == (True, "10 images of 4x4x3 uint8")
    assert rows["snow.npy"][0] is False and "truncated" in rows["snow.npy"][1]
    assert rows["speckle_noise.npy"][0] is True  # extra corruptions are checked too
    missing = [n for n, (ok, d) in rows.items() if d == "missing"]
    assert sorted(missing) == sorted(f"{c}.npy" for c in BENCHMARK_CORRUPTIONS if c not in ("fog", "snow"))


def test_cli_check_fails_with_one_line_summary(tmp_path):
    _folder(tmp_path, ["fog"])
    result = CliRunner().invoke(cli, ["data", "check", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "ok  fog.npy" in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: 14 file(s) missing or broken")
