"""What a result records: the setting a replayed order was drawn with, the real subsample size, a collapse."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tta import build_model
from tta.cli.main import cli
from tta.data.cifar_c import CifarCSource
from tta.pipeline.evaluate import evaluate
from tta.report.leaderboard import build, render
from tta.pipeline.results import markdown_table
from tta.streams import make_stream
from conftest import random_cifar_c

N = 40  # images per severity


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    root, ckpt = random_cifar_c(root, N)
    return root, ckpt


def _run(setup, *args):
    root, ckpt = setup
    result = CliRunner().invoke(cli, ["run", "-q", "--data-dir", str(root), "--model", "resnet20", "--checkpoint",
                                      str(ckpt), "--domains", "gaussian_noise", "--batch-size", "10", *args])
    assert result.exit_code == 0, result.output
    return result


def test_a_replayed_order_is_recorded_with_the_setting_it_was_drawn_with(setup, tmp_path):
    order = tmp_path / "order.json"
    _run(setup, "--delta", "0.1", "--seed", "3", "--export-order", str(order), "--output", str(tmp_path / "a.json"))
    _run(setup, "--order", str(order), "--output", str(tmp_path / "b.json"))
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert b["stream"]["fingerprint"] == a["stream"]["fingerprint"]
    for key in ("delta", "seed", "n_examples", "sorted", "severity"):
        assert b["stream"][key] == a["stream"][key], key
    assert b["stream"]["delta"] == 0.1 and b["stream"]["seed"] == 3
    assert [bd.setting for bd in build([{**a, "_path": "a"}, {**b, "_path": "b"}])][0].delta == 0.1
    assert len(build([{**a, "_path": "a"}, {**b, "_path": "b"}])) == 1  # one setting, not two


def test_an_edited_order_is_not_trusted_to_know_its_protocol(setup, tmp_path):
    order = tmp_path / "order.json"
    _run(setup, "--delta", "0.1", "--export-order", str(order), "--output", str(tmp_path / "a.json"))
    doc = json.loads(order.read_text())
    doc["blocks"][0]["index"] = sorted(doc["blocks"][0]["index"])  # no longer the fingerprinted order
    order.write_text(json.dumps(doc))
    _run(setup, "--order", str(order), "--output", str(tmp_path / "b.json"))
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["stream"]["delta"] is None and b["stream"]["protocol"].startswith("unknown")


def test_n_examples_larger_than_a_domain_records_the_count_used(setup, tmp_path):
    result = _run(setup, "--n-examples", "5000", "--output", str(tmp_path / "r.json"))
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["stream"]["n_examples"] == N and doc["metrics"]["num_samples"] == N
    assert f"--n-examples 5000: the domains hold fewer images, so {N} per domain were used" in result.output


def test_a_checkpoint_with_nan_weights_is_refused_at_load(setup, tmp_path):
    root, ckpt = setup
    state = torch.load(ckpt, weights_only=True)
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(state, bad)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["run", "-q", "--data-dir", str(root), "--model", "resnet20", "--checkpoint", str(bad),
                                      "--domains", "gaussian_noise", "--batch-size", "10", "--output", str(out)])
    assert result.exit_code == 2 and not out.exists()
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "NaN or infinite weights" in last and "conv1.weight" in last


class _Collapsing(torch.nn.Module):
    """Predicts like ``model`` until its ``at``-th call, then returns NaN logits from sample ``row`` on."""

    def __init__(self, model, at, row):
        super().__init__()
        self.model, self.at, self.row, self.calls = model, at, row, 0

    def forward(self, x):
        self.calls += 1
        out = self.model(x)
        if self.calls == self.at:
            out[self.row:] = float("nan")
        elif self.calls > self.at:
            out[:] = float("nan")
        return out


def test_a_collapse_is_recorded_instead_of_nan_metrics(setup):
    root, ckpt = setup
    model = build_model("resnet20")
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    model.eval()
    stream = make_stream(CifarCSource(root), "continual", domains=["gaussian_noise"], batch_size=10, seed=0)
    healthy = evaluate(model, stream, progress=False)
    m = evaluate(_Collapsing(model, at=3, row=4), stream, progress=False)
    assert m.collapsed_at == {"batch": 2, "sample": 24}
    assert m.nonfinite_samples == 16
    # the samples before the collapse are scored as before; the rest count as wrong
    assert m.batch_errors[:2] == healthy.batch_errors[:2] and m.batch_errors[3] == 100.0
    assert np.isfinite(m.ece) and np.isfinite(m.overall_error)
    assert healthy.collapsed_at is None
    doc = {"schema": "tta.result", "schema_version": 1, "method": {"name": "x", "hparams": {}},
           "model": {"name": "resnet20"}, "data": {"dataset": "cifar10", "label": "CIFAR-10-C"},
           "stream": {**stream.describe(), "fingerprint": stream.fingerprint()}, "metrics": m.as_dict(),
           "runtime": {"threads": 1, "device": "cpu"}, "_path": "x.json"}
    assert "collapsed at batch 2 (sample 24)" in markdown_table(doc)
    assert "collapsed (seed 0 at batch 2)" in render(build([doc]))


def test_a_collapse_survives_save_and_resume_of_the_tally():
    from tta.pipeline.evaluate import Tally

    t = Tally(1)
    t.add(torch.tensor([1, 2]), torch.tensor([0.5, 0.5]), torch.tensor([1, 1]), torch.tensor([0, 0]), False,
          torch.tensor([True, False]))
    back = Tally.from_state(t.state())
    assert back.collapsed_at == {"batch": 0, "sample": 1} and back.nonfinite == 1 and back.wrong.tolist() == [1]
