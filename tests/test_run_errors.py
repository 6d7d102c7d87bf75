"""Bad inputs to `tta run`: one clear line on stderr, exit status 2, and no result file."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
from click.testing import CliRunner

from tta.cli.main import cli
from conftest import random_cifar_c

N = 20  # images per severity


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    root, ckpt = random_cifar_c(root, N)
    return root, ckpt


def _fails(args, tmp_path, match):
    out = tmp_path / "out" / "r.json"
    result = CliRunner().invoke(cli, ["run", "-q", "--output", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ") and match in lines[-1], result.output
    assert sum(ln.startswith("Error") for ln in lines) == 1
    assert not out.exists()
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True
    return lines[-1]


def _base(setup, data_dir=None):
    root, ckpt = setup
    return ["--data-dir", str(data_dir or root), "--model", "resnet20", "--checkpoint", str(ckpt)]


def _copy_layout(setup, tmp_path):
    root, _ = setup
    folder = tmp_path / "data" / "CIFAR-10-C"
    folder.mkdir(parents=True)
    for f in (root / "CIFAR-10-C").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    return tmp_path / "data", folder


def test_missing_corruption_files_are_listed(setup, tmp_path):
    line = _fails([*_base(setup), "--domains", "gaussian_noise,fog,snow"], tmp_path, "lacks 2 corruption file(s)")
    assert "fog.npy" in line and "snow.npy" in line


def test_missing_folder_explains_how_to_get_data(setup, tmp_path):
    line = _fails(["--dataset", "cifar10", "--data-dir", str(tmp_path / "empty")], tmp_path, "No CIFAR-10-C data")
    assert "--download" in line and "--dataset demo" in line


def test_truncated_npy(setup, tmp_path):
    data_dir, folder = _copy_layout(setup, tmp_path)
    f = folder / "gaussian_noise.npy"
    f.write_bytes(f.read_bytes()[:-1000])
    _fails([*_base(setup, data_dir), "--domains", "gaussian_noise"], tmp_path, "is truncated")


def test_labels_of_wrong_length(setup, tmp_path):
    data_dir, folder = _copy_layout(setup, tmp_path)
    np.save(folder / "labels.npy", np.zeros(5 * N - 5, dtype=np.uint8))
    _fails([*_base(setup, data_dir), "--domains", "gaussian_noise"], tmp_path, "labels.npy has 95 labels")


def test_unknown_shift_and_corruption(setup, tmp_path):
    _fails([*_base(setup), "--shift", "sideways"], tmp_path, "unknown shift 'sideways'")
    _fails([*_base(setup), "--domains", "gausian_noise"], tmp_path, "unknown corruption 'gausian_noise'")


def test_batch_larger_than_stream(setup, tmp_path):
    _fails([*_base(setup), "--domains", "gaussian_noise", "--batch-size", "64"], tmp_path, "larger than the stream")


def test_nan_images(setup, tmp_path):
    data_dir, folder = _copy_layout(setup, tmp_path)
    x = np.random.default_rng(1).random((5 * N, 32, 32, 3), dtype=np.float32)
    x[4 * N + 3, 5, 5, 0] = np.nan  # one pixel of a severity-5 image
    np.save(folder / "gaussian_noise.npy", x)
    _fails([*_base(setup, data_dir), "--domains", "gaussian_noise", "--batch-size", "5"], tmp_path, "NaN")


def test_unwritable_output_path(setup, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    result = CliRunner().invoke(cli, ["run", "-q", *_base(setup), "--domains", "gaussian_noise", "--batch-size", "4",
                                      "--output", str(blocker / "r.json")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("Error: cannot write the result")
    assert blocker.read_text() == "x"


def test_default_model_missing_says_which_flags(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("TTA_MODEL_DIR", str(tmp_path / "models"))
    root, _ = setup
    line = _fails(["--data-dir", str(root), "--domains", "gaussian_noise", "--batch-size", "4"], tmp_path, "--model wrn-28-10 --checkpoint")
    assert "Standard" in line


def test_interrupted_run_leaves_no_result(setup, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    # the module, not the function `tta.run`
    monkeypatch.setattr(importlib.import_module("tta.pipeline.orchestrator"), "evaluate", boom)
    out = tmp_path / "o" / "r.json"
    result = CliRunner().invoke(cli, ["run", "-q", *_base(setup), "--domains", "gaussian_noise", "--batch-size", "4",
                                      "--output", str(out)])
    assert result.exit_code != 0
    assert not out.exists() and not list(out.parent.glob("*"))
