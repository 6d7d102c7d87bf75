"""The embedded offline demo, in a reduced configuration (the full run is timed in docs/running.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tta import list_methods
from tta.cli.main import cli

pytest.importorskip("sklearn")

DOMAINS = "gaussian_noise,contrast,pixelate"


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    """A fresh cache dir, so the demo trains and caches its model as on a new machine."""
    path = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("TTA_CACHE", str(path))
    mp.setenv("TTA_DATA", str(path / "no-data"))
    yield path
    mp.undo()


def _run(args):
    result = CliRunner().invoke(cli, ["run", "-q", *args])
    assert result.exit_code == 0, result.output
    return result


def test_demo_source_matches_direct_computation(demo_cache, tmp_path):
    out = tmp_path / "r.json"
    result = _run(["--dataset", "demo", "--method", "source", "--domains", DOMAINS, "--output", str(out)])
    doc = json.loads(out.read_text())
    assert doc["demo"] is True and "NOT CIFAR-10-C" in doc["notice"]
    assert "DEMO RUN" in result.output and "NOT CIFAR-10-C" in result.output
    weights = demo_cache / "demo" / "digits-cnn-v1.pt"
    assert weights.is_file() and doc["model"]["checkpoint"] == str(weights)

    from tta.data.demo import demo_corrupt, demo_split
    from tta.data.demo_model import DemoCNN

    model = DemoCNN()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    _, (images, labels) = demo_split()
    clean_err = None
    for name in DOMAINS.split(","):
        x = torch.from_numpy(demo_corrupt(images, name, 5)).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            err = 100 * float(np.mean(model(x).argmax(1).numpy() != labels))
        assert doc["metrics"]["domain_errors"][name] == pytest.approx(err)
    with torch.no_grad():
        clean_err = 100 * float(np.mean(model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy() != labels))
    # the source model learned the digits, and the corruptions hurt it
    assert clean_err < 10
    assert doc["metrics"]["domain_errors"]["gaussian_noise"] > 2 * clean_err


@pytest.mark.parametrize("method", ["unmix-tns", "tbn"])
def test_demo_runs_adaptation_offline(demo_cache, tmp_path, method):
    if method not in list_methods():
        pytest.skip(f"{method} is not registered in this install")
    out = tmp_path / "r.json"
    plot = tmp_path / "curve.png"
    result = _run(["--dataset", "demo", "--method", method, "--shift", "continual", "--domains", DOMAINS,
                   "--n-examples", "256", "--output", str(out), "--plot", str(plot)])
    doc = json.loads(out.read_text())
    assert doc["method"]["name"] == method and doc["stream"]["shift"] == "continual"
    assert doc["metrics"]["num_samples"] == 3 * 256
    assert len(doc["metrics"]["batch_errors"]) == 3 * 4
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert f"| error % ({method}) |" in result.output and "DEMO RUN" in result.output


def test_without_a_method_the_demo_runs_regime_aware(demo_cache, tmp_path):
    """issue #30: ``tta run`` without --method adapts with regime-aware, recorded under that name with its
    defaults; the method's options are checked as regime-aware's before anything loads."""
    out = tmp_path / "r.json"
    result = _run(["--dataset", "demo", "--shift", "continual", "--domains", DOMAINS, "--n-examples", "256",
                   "--output", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["method"]["name"] == "regime-aware"
    assert doc["method"]["hparams"]["mixed_init"] == "stratified" and doc["method"]["hparams"]["mixed_K"] == 128
    assert "| error % (regime-aware) |" in result.output
    bad = CliRunner().invoke(cli, ["run", "-q", "--dataset", "demo", "--option", "prior=4"])
    assert bad.exit_code == 2 and "regime-aware" in bad.output and "prior" in bad.output


def test_auto_without_data_explains_and_falls_back_to_demo(demo_cache, tmp_path, monkeypatch):
    monkeypatch.setattr("tta.data.resolve.network_available", lambda *a, **k: False)
    monkeypatch.delenv("TTA_DATA")  # no data location given at all: the default folder (<cache>/data) is empty
    out = tmp_path / "r.json"
    result = _run(["--method", "source", "--domains", "contrast", "--n-examples", "64", "--output", str(out)])
    assert "No CIFAR-10-C data under" in result.output and "--download" in result.output
    assert "Running the embedded DEMO instead" in result.output
    assert json.loads(out.read_text())["demo"] is True
