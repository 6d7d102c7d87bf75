"""A sweep's grid is checked whole before any cell runs: axis types, names, options, values, size."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from tta.cli.main import cli


def _sweep(tmp_path, grid_text: str | None, *args: str):
    db = tmp_path / "runs.db"
    argv = ["sweep", "--store", str(db), *args]
    if grid_text is not None:
        grid = tmp_path / "grid.toml"
        grid.write_text(grid_text)
        argv.insert(1, str(grid))
    result = CliRunner().invoke(cli, argv)
    return result, db


@pytest.mark.parametrize("grid,message", [
    ('seeds = "1,2"\n', "seeds must be a non-empty list"),
    ('seeds = ["a"]\n', "seeds must hold integers"),
    ('severities = ["x"]\n', "severities must hold integers"),
    ('seeds = [true]\n', "seeds must hold integers"),
    ('shifts = [1]\n', "shifts must hold names"),
    ('shifts = ["contnual"]\n', "did you mean 'continual'?"),
    ('methods = [{ name = "tent", variants = "x" }]\n', "variants of 'tent' must be a list of tables"),
    ('methods = ["tent", "tnet"]\n', "unknown method 'tnet' (did you mean 'tent'?)"),
    ('methods = [{ name = "tbn", variants = [{ priorr = 1 }] }]\n', "no option 'priorr' (did you mean 'prior'?)"),
    ('[run]\nn_examples = "fifty"\n', "n_examples must be an integer >= 1, got 'fifty'"),
    ('[run]\nbatch_size = 0\n', "batch_size must be >= 1"),
    ('severities = [6]\n', "severity must be 1..5"),
])
def test_a_bad_grid_is_one_line_and_runs_nothing(tmp_path, grid, message):
    result, db = _sweep(tmp_path, grid, "--dry-run")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output, result.output
    assert result.output.count("\n") == 1 and not db.exists()


@pytest.mark.parametrize("flags,message", [
    (["--methods", "source,tnet"], "did you mean 'tent'?"),
    (["--methods", "tbn", "--batch-size", "0"], "batch_size must be >= 1"),
    (["--methods", "tent", "-O", "lrr=1"], "no option 'lrr'"),
    (["--methods", "tbn", "--shifts", "mixed@x"], "after @ put a Dirichlet delta"),
])
def test_bad_flags_fail_the_sweep_before_any_cell(tmp_path, flags, message):
    result, db = _sweep(tmp_path, None, *flags)  # not even --dry-run: nothing may run
    assert result.exit_code == 2 and message in result.output, result.output
    assert not db.exists()


def test_a_huge_grid_is_refused_at_once_not_planned_for_an_hour(tmp_path):
    """#32: a million seeds planned for about 50 minutes with no output under --dry-run."""
    seeds = ", ".join(map(str, range(1_000_000)))
    result, db = _sweep(tmp_path, f"methods = [\"source\"]\nseeds = [{seeds}]\n", "--dry-run")
    assert result.exit_code == 2 and "the grid has 1,000,000 cells, more than the 10,000" in result.output
    assert not db.exists()
