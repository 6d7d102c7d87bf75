"""`tta run` on a small CIFAR-10-C-layout folder built from the real CIFAR-10 test images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tta import load_model
from tta.cli.main import cli

from conftest import SMALL_C_CORRUPTIONS as SIGMAS, shared_path, to_tensor


def _run(args):
    result = CliRunner().invoke(cli, ["run", "-q", *args])
    assert result.exit_code == 0, result.output
    return result


def _direct_errors(folder, order, model_fn, batch_size, reset_each):
    """Per-domain error computed here from the saved order, the .npy files and the model."""
    labels = np.load(folder / "labels.npy").astype(np.int64)
    n = len(labels) // 5
    errors, adapted = {}, None
    for d, dom in enumerate(order["domains"]):
        assert dom["severity"] == 5
        images = np.load(folder / f"{dom['name']}.npy")[4 * n : 5 * n]
        y = labels[4 * n : 5 * n]
        idx = np.asarray(order["blocks"][d]["index"])
        assert order["blocks"][d]["domain"] == d
        if adapted is None or reset_each:
            adapted = model_fn()
        wrong = 0
        for i in range(0, len(idx), batch_size):
            b = idx[i : i + batch_size]
            with torch.no_grad():
                pred = adapted(to_tensor(images[b])).argmax(1).numpy()
            wrong += int(np.sum(pred != y[b]))
        errors[dom["name"]] = 100 * wrong / len(idx)
    return errors


@pytest.mark.realdata
@pytest.mark.parametrize(
    "method,shift",
    [("source", "iid"), ("tbn", "continual")],
)
def test_run_matches_direct_computation(small_cifar_c_dir, resnet20_checkpoint, tmp_path, method, shift):
    out, order_path = tmp_path / "r.json", tmp_path / "order.json"
    result = _run([
        "--method", method, "--shift", shift, "--data-dir", str(small_cifar_c_dir), "--model", "resnet20",
        "--checkpoint", str(resnet20_checkpoint), "--domains", "noise_low,noise_high", "--batch-size", "50",
        "--output", str(out), "--export-order", str(order_path),
    ])
    doc = json.loads(out.read_text())
    order = json.loads(order_path.read_text())
    model = load_model("resnet20", checkpoint=resnet20_checkpoint)

    def fresh():
        if method == "source":
            return model.eval()
        m = load_model("resnet20", checkpoint=resnet20_checkpoint)
        return m.train()  # tbn with prior 0 is train-mode BatchNorm, whose running stats never feed back

    expected = _direct_errors(small_cifar_c_dir / "CIFAR-10-C", order, fresh, 50, reset_each=True)
    got = doc["metrics"]["domain_errors"]
    assert set(got) == set(SIGMAS)
    for name in SIGMAS:
        assert got[name] == pytest.approx(expected[name], abs=1e-9)
    assert doc["metrics"]["mean_domain_error"] == pytest.approx(np.mean(list(expected.values())))
    # the stronger noise hurts the unadapted model more
    if method == "source":
        assert got["noise_high"] > got["noise_low"]
    assert doc["stream"]["order_fingerprint"] == order["fingerprint"]
    assert doc["method"]["name"] == method and doc["demo"] is False
    assert doc["model"]["checkpoint_sha256"] and len(doc["model"]["checkpoint_sha256"]) == 64
    assert doc["runtime"]["threads"] == 1
    assert set(doc["versions"]) >= {"tta", "torch", "numpy"}
    assert f"| error % ({method}) |" in result.output


@pytest.mark.realdata
def test_frost_dir_reaches_generated_domains(cifar10_test, resnet20_checkpoint, tmp_path, monkeypatch) -> None:
    from tta.corruptions import corrupt

    frost = shared_path("data", "frost")
    monkeypatch.delenv("TTA_FROST_DIR", raising=False)
    images, labels = cifar10_test
    clean = tmp_path / "data" / "cifar10"
    clean.mkdir(parents=True)
    np.save(clean / "test_images.npy", np.asarray(images[:64]))
    np.save(clean / "test_labels.npy", np.asarray(labels[:64]))
    common = ["--data-dir", str(tmp_path / "data"), "--dataset", "cifar10", "--model", "resnet20",
              "--checkpoint", str(resnet20_checkpoint), "--domains", "frost", "--batch-size", "32",
              "--method", "source"]
    bad = CliRunner().invoke(cli, ["run", "-q", *common, "--frost-dir", str(tmp_path / "nowhere"),
                                   "--output", str(tmp_path / "bad.json")])
    assert bad.exit_code == 2 and "nowhere" in bad.output
    _run([*common, "--frost-dir", str(frost), "--output", str(tmp_path / "r.json")])
    got = json.loads((tmp_path / "r.json").read_text())["metrics"]["domain_errors"]["frost"]
    x = corrupt(np.asarray(images[:64]), "frost", 5, preset="cifar", seed=0, frost_dir=frost)
    model = load_model("resnet20", checkpoint=resnet20_checkpoint)
    with torch.no_grad():
        pred = model(to_tensor(x)).argmax(1).numpy()
    assert got == pytest.approx(100.0 * float(np.mean(pred != np.asarray(labels[:64]))))
