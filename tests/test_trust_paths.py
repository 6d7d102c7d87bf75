"""Paths: names built from data stay inside their folder; bad output names are one line (#32 row 13, tracebacks)."""
from __future__ import annotations

import errno
import os

import pytest
from click.testing import CliRunner

from tta import atomic
from tta.cli.main import cli
from tta.errors import InputError
from tta.safepath import child
from tta.sweep.store import Store


def result_doc(**over) -> dict:
    """A minimal result document in the current schema."""
    doc = {
        "schema": "tta.result", "schema_version": 1, "demo": False,
        "method": {"name": "source", "hparams": {}}, "model": {"name": "resnet20", "checkpoint_sha256": "ab"},
        "data": {"dataset": "cifar10", "label": "cifar10"},
        "stream": {"fingerprint": "f0", "shift": "continual", "seed": 1, "batch_size": 8, "severity": 5,
                   "domains": [{"name": "fog", "severity": 5, "size": 10}, {"name": "gaussian_noise", "severity": 5,
                                                                            "size": 10}]},
        "metrics": {"domain_errors": {"fog": 40.0, "gaussian_noise": 60.0}, "mean_domain_error": 50.0,
                    "overall_error": 50.0, "ece": 1.0, "num_samples": 20, "images_per_s": 10.0, "wall_time_s": 2.0,
                    "peak_memory_mb": 1.0, "batch_errors": [30.0, 50.0, 60.0, 60.0], "batch_domains": [0, 0, 1, 1]},
        "runtime": {"threads": 1, "device": "cpu", "config": {"method": "source"}},
        "versions": {"tta": "0.1.0"},
    }
    for key, value in over.items():
        doc[key] = value
    return doc


@pytest.mark.parametrize("cid", ["../../x", "/abs/x", "..", "a/b", ".hidden", "x\x00y"])
def test_export_of_a_crafted_cell_id_writes_nothing_outside_the_folder(tmp_path, cid):
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.import_result("ok", result_doc(), {}, "tta run", setting="Continual")
        store.import_result(cid, result_doc(), {}, "tta run", setting="Continual")
    out = tmp_path / "deep" / "er" / "out"
    before = {p for p in tmp_path.rglob("*")}
    res = CliRunner().invoke(cli, ["store", "export", str(db), str(out)])
    assert res.exit_code == 2 and "cell id" in res.output and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    created = {p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("s.db")} - before
    assert all(out in p.parents for p in created), created  # nothing written outside out/ (SQLite's own aside)
    assert not (tmp_path / "x").exists() and not os.path.exists("/abs/x")


def test_a_symlink_in_the_folder_does_not_lead_out(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "c.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(InputError, match="leads outside"):
        child(tmp_path / "out", "c.json", what="cell id", fix="x")
    assert child(tmp_path / "out", "d.json", what="cell id", fix="x") == (tmp_path / "out" / "d.json").resolve()


def test_export_into_an_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.import_result("ok", result_doc(), {}, "tta run", setting="Continual")

    def refuse(*a, **k):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)  # what a read-only folder answers (tests run as root)
    res = CliRunner().invoke(cli, ["store", "export", str(db), str(tmp_path / "out")])
    assert res.exit_code == 2 and "Read-only file system" in res.output and "writable folder" in res.output, res.output
    assert "Traceback" not in res.output

    monkeypatch.setattr("pathlib.Path.mkdir", refuse)
    res = CliRunner().invoke(cli, ["store", "export", str(db), str(tmp_path / "new")])
    assert res.exit_code == 2 and "cannot create" in res.output, res.output


# -- output names --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["r-{foo}.json", "r-{0}.json", "r-{", "r-}.json", "r-{method.__class__}.json",
                                  "r-{seed!r}.json", "r-{seed:>99999}.json"])
def test_output_names_are_literal_except_the_documented_placeholders(tmp_path, name):
    res = CliRunner().invoke(cli, ["run", "--dataset", "demo", "-q", "-o", str(tmp_path / name)])
    assert res.exit_code == 2 and "placeholder" in res.output or "brace" in res.output, res.output
    assert "Traceback" not in res.output and "class" not in res.output.split("placeholder")[-1]
    assert list(tmp_path.iterdir()) == []


def test_the_documented_placeholders_are_filled_as_plain_text(tmp_path):
    from tta.pipeline.outputs import fill_placeholders

    values = {"dataset": "cifar10", "method": "tent", "shift": "iid", "seed": 3}
    assert fill_placeholders("r/{dataset}-{method}-{shift}-s{seed}.json", values) == "r/cifar10-tent-iid-s3.json"
    assert fill_placeholders("{method}", {**values, "method": "{seed}"}) == "{seed}"  # a value is not re-read


def test_an_output_name_too_long_for_the_file_system_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["run", "--dataset", "demo", "-q", "-o", str(tmp_path / ("r" * 300 + ".json"))])
    assert res.exit_code == 2 and "too long" in res.output or "shorter --output" in res.output, res.output
    assert "Traceback" not in res.output
