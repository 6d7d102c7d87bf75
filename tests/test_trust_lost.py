"""Lost results: ``--export-order`` never writes over a result, and never before the run's checks (#32 row 8)."""
from __future__ import annotations

import json

from click.testing import CliRunner

from tta.cli.main import cli

from test_trust_files import setup  # noqa: F401  (fixture)


def _run(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


def test_export_order_onto_an_existing_result_is_refused_and_leaves_it(setup, tmp_path):  # noqa: F811
    res = tmp_path / "r.json"
    assert _run(*setup, "-o", res).exit_code == 0
    before = res.read_text()
    again = _run(*setup, "--export-order", res, "-o", tmp_path / "other.json")
    assert again.exit_code == 2 and "not an exported order" in again.output, again.output
    assert res.read_text() == before and not (tmp_path / "other.json").exists()


def test_export_order_onto_the_output_itself_writes_nothing(setup, tmp_path):  # noqa: F811
    same = tmp_path / "same.json"
    res = _run(*setup, "--export-order", same, "-o", same)
    assert res.exit_code == 2 and "also the --output" in res.output, res.output
    assert not same.exists()
    # with a result already there, it is left as it was
    assert _run(*setup, "-o", same).exit_code == 0
    before = same.read_text()
    res = _run(*setup, "--export-order", same, "-o", same)
    assert res.exit_code == 2 and same.read_text() == before


def test_export_order_is_written_only_after_the_output_checks_pass(setup, tmp_path):  # noqa: F811
    out = tmp_path / "r.json"
    assert _run(*setup, "-o", out).exit_code == 0
    refused = _run(*setup, "-b", "4", "--export-order", tmp_path / "o.json", "-o", out)  # another configuration
    assert refused.exit_code == 2 and "another configuration" in refused.output, refused.output
    assert not (tmp_path / "o.json").exists()


def test_an_earlier_order_is_replaced_by_a_new_export(setup, tmp_path):  # noqa: F811
    order = tmp_path / "o.json"
    assert _run(*setup, "--export-order", order, "-o", tmp_path / "a.json").exit_code == 0
    assert _run(*setup, "--seed", "3", "--export-order", order, "-o", tmp_path / "b.json").exit_code == 0
    assert json.loads(order.read_text())["meta"]["seed"] == 3
