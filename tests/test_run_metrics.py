"""Online metrics (ECE, curves, per-domain errors), result files and CLI option parsing."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tta.cli.main import cli
from tta.pipeline.evaluate import evaluate, expected_calibration_error
from tta.atomic import write_bytes as atomic_write_bytes
from tta.pipeline.results import markdown_table, read_json
from tta.schema import RESULT_SCHEMA
from tta.streams import make_stream

from test_streams_order import ToySource


def test_ece_matches_a_per_sample_loop():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.05, 1.0, 500)
    correct = rng.random(500) < conf ** 2
    total = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        members = [i for i in range(500) if lo < conf[i] <= hi]
        if members:
            total += len(members) / 500 * abs(np.mean(correct[members]) - np.mean(conf[members]))
    assert expected_calibration_error(conf, correct) == pytest.approx(100 * total)
    # perfectly calibrated in every bin -> 0
    assert expected_calibration_error(np.full(10, 0.7), np.array([1] * 7 + [0] * 3)) == pytest.approx(0.0)


class _Oracle(torch.nn.Module):
    """Predicts the class written in pixel (0,0,0) plus a fixed wrong answer for every 4th image."""

    def forward(self, x):
        idx = (x[:, 1, 0, 0] * 255).round().long() + 256 * (x[:, 2, 0, 0] * 255).round().long()
        logits = torch.zeros(len(x), 10)
        logits[torch.arange(len(x)), self.y[idx] % 10] = 5.0
        wrong = idx % 4 == 0
        logits[wrong] = 0
        logits[wrong, (self.y[idx[wrong]] + 1) % 10] = 5.0
        return logits


def test_metrics_are_consistent_with_predictions():
    src = ToySource(n=64)
    model = _Oracle()
    model.y = torch.from_numpy(src.y)
    stream = make_stream(src, "mixed", batch_size=10, seed=1)
    m = evaluate(model, stream, progress=False, keep_predictions=True)
    # every 4th sample index is wrong, in every domain
    assert m.domain_errors == {k: pytest.approx(100 * 16 / 64) for k in ("a", "b", "c")}
    assert m.overall_error == pytest.approx(25.0)
    sizes = [len(b.y) for b in stream]
    assert np.average(m.batch_errors, weights=sizes) == pytest.approx(m.overall_error)
    assert m.num_samples == 192 and len(m.batch_errors) == len(stream)
    assert m.peak_memory_mb > 0 and m.images_per_s > 0


def test_atomic_write_never_leaves_partial_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")

    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # type: ignore[arg-type]
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_delta_flag_alone_uses_dataset_default_and_results_round_trip(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("TTA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("tta.data.demo_model.EPOCHS", 1)  # the model's quality is irrelevant here
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["run", "-q", "--dataset", "demo", "--domains", "contrast", "--delta",
                                      "--n-examples", "300", "--batch-size", "32", "--output", str(out)])
    assert result.exit_code == 0, result.output
    doc = read_json(out)
    assert doc["schema"] == RESULT_SCHEMA and doc["stream"]["delta"] == 0.1 and doc["stream"]["seed"] == 2020
    assert markdown_table(doc).splitlines()[-1] in result.output.splitlines()
    assert json.loads(out.read_text())["metrics"]["num_samples"] == 300
