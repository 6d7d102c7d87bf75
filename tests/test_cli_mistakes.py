"""Ordinary mistakes on the command line: one `Error:` line naming the problem and the fix, exit 2, nothing written."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from tta.cli.main import cli
from conftest import random_cifar_c

N = 20


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    root, ckpt = random_cifar_c(root, N)
    return ["--data-dir", str(root), "--model", "resnet20", "--checkpoint", str(ckpt), "--domains", "gaussian_noise",
            "--batch-size", "10"]


def _fails(args, tmp_path, match):
    out = tmp_path / "out" / "r.json"
    result = CliRunner().invoke(cli, ["run", "-q", "--output", str(out), *map(str, args)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ") and match in lines[-1], result.output
    assert "Traceback" not in result.output and not out.exists()
    return lines[-1]


def test_plot_with_an_unknown_format_fails_before_the_run(setup, tmp_path):
    _fails([*setup, "--plot", tmp_path / "curve.xyz"], tmp_path, "cannot draw a .xyz file")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_device_mps_without_mps(setup, tmp_path):
    _fails([*setup, "--device", "mps"], tmp_path, "no Apple GPU (MPS); pass --device cpu")


@pytest.mark.parametrize("value", ["-1", "inf", "nan"])
def test_delta_out_of_range(setup, tmp_path, value):
    line = _fails([*setup, "--delta", value], tmp_path, "--delta must be a finite number >= 0")
    assert "No such option" not in line


def test_default_model_missing_in_cli_words(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("TTA_MODEL_DIR", str(tmp_path / "none"))
    root = setup[1]
    line = _fails(["--data-dir", root, "--model", "wrn-28-10", "--domains", "gaussian_noise", "--batch-size", "10"], tmp_path,
                  "pass --checkpoint")
    assert "checkpoint=" not in line and "pretrained=False" not in line


def test_missing_data_dir_with_a_model_says_the_folder_is_missing(setup, tmp_path):
    line = _fails(["--data-dir", tmp_path / "nonexistent", *setup[2:]], tmp_path, "does not exist")
    assert "demo" not in line


def test_run_table_header_names_the_label_order_and_resolved_values(setup, tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["run", "-q", *setup, "--delta", "0.1", "--method", "unmix-tns", "--output", str(out)])
    assert result.exit_code == 0, result.output
    header = next(ln for ln in result.output.splitlines() if ln.startswith("unmix-tns"))
    assert "delta 0.1" in header and "None" not in header
    result = CliRunner().invoke(cli, ["run", "-q", *setup, "--sorted", "--output", str(tmp_path / "s.json")])
    assert "class-sorted" in result.output


# -- tta leaderboard -----------------------------------------------------------------------------------------
@pytest.fixture()
def result_file(setup, tmp_path):
    out = tmp_path / "res" / "r.json"
    assert CliRunner().invoke(cli, ["run", "-q", *setup, "--output", str(out)]).exit_code == 0
    return out


def _board_fails(args, match):
    result = CliRunner().invoke(cli, ["leaderboard", *map(str, args)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ") and match in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["metrics"].pop("mean_domain_error"), "metrics.mean_domain_error is missing"),
    (lambda d: d["metrics"].update(mean_domain_error="12%"), "not a finite number"),
    (lambda d: d["metrics"]["domain_errors"].update(gaussian_noise="x"), "domain_errors"),
    (lambda d: d.update(schema_version=99), "schema_version 99 is newer"),
])
def test_leaderboard_refuses_a_result_it_cannot_rank(result_file, edit, match):
    doc = json.loads(result_file.read_text())
    edit(doc)
    result_file.write_text(json.dumps(doc))
    _board_fails([result_file], match)


def test_leaderboard_output_in_an_unwritable_place(result_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _board_fails([result_file, "--output", blocker / "board.md"], "cannot write")


def test_help_does_not_import_torch():
    code = ("import sys; from click.testing import CliRunner; from tta.cli.main import cli; "
            "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0; "
            "r = CliRunner().invoke(cli, ['run', '--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cli_defaults_agree_with_the_library():
    """(``tta run``'s defaults are imported from the torch-free ``tta.pipeline.config``, not repeated.)"""
    from tta.cli import corrupt_cmd, list_cmd
    from tta.catalog import CATALOGS
    from tta.corruptions import PRESETS

    assert sorted(list_cmd.WHAT) == sorted(CATALOGS) and sorted(corrupt_cmd.PRESET_NAMES) == sorted(PRESETS)
