"""tta.run: the library's one call for a run, used by the CLI, sweeps and notebooks."""
from __future__ import annotations

import json

import pytest

import tta
from tta.errors import InputError


def test_unknown_settings_are_named_before_anything_runs() -> None:
    with pytest.raises(InputError, match="unknown run setting.*n_exmaples"):
        tta.run({"method": "tbn", "n_exmaples": 10})


def test_an_unwritable_output_fails_before_the_run(tmp_path) -> None:
    (tmp_path / "taken").write_text("")
    with pytest.raises(InputError, match="cannot write"):
        tta.run({"method": "tbn"}, output=tmp_path / "taken" / "r.json")


@pytest.mark.realdata
def test_run_writes_the_document_it_returns_at_the_resolved_path(small_cifar_c_dir, resnet20_checkpoint, tmp_path):
    config = {"method": "tbn", "shift": "continual", "dataset": "cifar10", "data_dir": str(small_cifar_c_dir),
              "model": "resnet20", "checkpoint": str(resnet20_checkpoint), "domains": ["noise_low", "noise_high"],
              "n_examples": 40, "batch_size": 20, "seed": 3}
    out = tta.run(config, output=tmp_path / "{dataset}-{method}-{shift}-s{seed}.json")
    assert out.output == tmp_path / "cifar10-tbn-continual-s3.json"
    assert json.loads(out.output.read_text()) == out.doc
    assert out.resumed_at_batch == 0 and not list(tmp_path.glob("*.partial.pt"))
    # the same configuration in memory (no output) gives the same errors: one code path
    again = tta.run(tta.RunConfig(**config))
    assert again.output is None and again.doc["metrics"]["domain_errors"] == out.doc["metrics"]["domain_errors"]
