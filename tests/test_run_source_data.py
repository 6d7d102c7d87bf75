"""`tta run --source-data PATH` hands clean source images to the method (eata's Fisher); without it,
eata stops with one line naming the flag and the source-free `eta`; the path is recorded."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from tta.cli.main import cli


def _run(tmp_path, *extra):
    out = tmp_path / "r.json"
    args = ["run", "-q", "--dataset", "demo", "--method", "eata", "--n-examples", "40", "-b", "20", "--domains",
            "gaussian_noise", "-O", "fisher_samples=16", "-O", "fisher_batch=8", "--output", str(out), *extra]
    return CliRunner().invoke(cli, args), out


def test_eata_without_source_data_names_the_flag_and_eta(tmp_path):
    result, out = _run(tmp_path)
    assert result.exit_code == 2, result.output
    last = [ln for ln in result.output.splitlines() if ln.strip()][-1]
    assert last.startswith("Error: ") and "--source-data" in last and "'eta', the source-free variant" in last
    assert not out.exists()


def test_eata_runs_with_source_data_and_records_it(tmp_path):
    source = tmp_path / "source.npy"
    np.save(source, np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8))
    result, out = _run(tmp_path, "--source-data", str(source))
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert str(source) in json.dumps(record)
