"""File validation: every file tta reads but did not just write is checked before use, one line on a problem.

Manifests, checkpoints, training records, stores, result files and order files (#32 "Tracebacks"), plus
the writes that can fail under a run: a full disk loses neither the result nor the progress.
"""
from __future__ import annotations

import errno
import json
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tta import atomic, build_model
from tta.cli.main import cli
from tta.schema import ListOf, Maybe, NUMBER, problem, result_problem
from tta.sweep.store import Store

from test_trust_paths import result_doc

N = 24


@pytest.fixture()
def setup(tmp_path):
    folder = tmp_path / "data" / "CIFAR-10-C"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(folder / "gaussian_noise.npy", rng.integers(0, 256, (5 * N, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.arange(N) % 10, 5).astype(np.uint8))
    torch.manual_seed(0)
    ckpt = tmp_path / "rand20.pt"
    torch.save(build_model("resnet20").state_dict(), ckpt)
    return ["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--model", "resnet20", "--checkpoint",
            str(ckpt), "--domains", "gaussian_noise", "-b", "8", "-q"]


def _fails(args, *match):
    res = CliRunner().invoke(cli, [*map(str, args)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "Traceback" not in res.output, res.output
    for m in match:
        assert m in lines[-1], lines[-1]
    return lines[-1]


# -- the checker itself -----------------------------------------------------------------------------------
def test_the_checker_names_the_field_and_refuses_bools_nan_and_missing_keys():
    schema = {"a": {"b": ListOf(NUMBER)}, "c?": Maybe(int)}
    assert problem({"a": {"b": [1, 2.5]}}, schema) is None
    assert problem({"a": {"b": [1, float("nan")]}}, schema) == "a.b[1] is nan, not a finite number"
    assert problem({"a": {"b": [True]}}, schema) == "a.b[0] is True, not a finite number"
    assert problem({"a": {}}, schema) == "a.b is missing"
    assert problem({"a": {"b": []}, "c": "x"}, schema) == "c is 'x', not an integer"
    assert problem({"a": {"b": []}, "c": True}, schema) == "c is True, not an integer"


# -- tta corrupt manifests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("corruptions", 5), ("severities", "x"), ("severities", [7]),
                                          ("seed", "zero")])
def test_a_manifest_with_wrong_types_is_one_line(setup, tmp_path, field, value):
    manifest = {"generator": "tta.corruptions", "preset": "cifar", "seed": 0, "n": N,
                "severities": [1, 2, 3, 4, 5], "corruptions": ["gaussian_noise"], field: value}
    (tmp_path / "data" / "CIFAR-10-C" / "tta-corrupt.json").write_text(json.dumps(manifest))
    _fails(["run", *setup, "-o", tmp_path / "r.json"], "tta-corrupt.json", field, "tta corrupt")


# -- checkpoints and training records -------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"hello, this is text\n", bytes(range(256)) * 8])
def test_a_text_or_random_file_as_checkpoint_is_one_line(setup, tmp_path, content):
    bad = tmp_path / "bad.th"
    bad.write_bytes(content)
    args = [*setup]
    args[args.index("--checkpoint") + 1] = str(bad)
    _fails(["run", *args, "-o", tmp_path / "r.json"], str(bad), "checkpoint")


@pytest.mark.parametrize("record", [{"model": "resnet20", "norm": "bn", "norm_options": "notadict"},
                                    {"model": "resnet20", "hyperparameters": {}, "config": {}, "norm_options": {}},
                                    {"model": "resnet20", "norm": 3, "hyperparameters": {}, "config": {}}])
def test_a_training_record_with_wrong_fields_is_one_line(setup, tmp_path, record):
    ckpt = setup[setup.index("--checkpoint") + 1]
    from tta.training import record_path
    from tta.training.trainer import RECORD_SCHEMA

    record_path(ckpt).write_text(json.dumps({"schema": RECORD_SCHEMA, **record}))
    _fails(["run", *setup, "-o", tmp_path / "r.json"], "training record", "--norm")


# -- hyperparameters ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["1e300", "-1e39"])
def test_a_learning_rate_beyond_float32_is_one_line(setup, tmp_path, value):
    _fails(["run", *setup, "-m", "tent", "-O", f"lr={value}", "-o", tmp_path / "r.json"], "lr", "float32")


def test_an_update_that_overflows_at_run_time_is_one_line(setup, tmp_path):
    _fails(["run", *setup, "-m", "tent", "-O", "lr=1e38", "-o", tmp_path / "r.json"], "overflowed", "smaller")


# -- stores --------------------------------------------------------------------------------------------------
def _store(tmp_path):
    db = tmp_path / "s.db"
    with Store(db) as store:
        for i in range(30):
            store.import_result(f"c{i:02d}", result_doc(), {}, "tta run", setting="Continual")
    return db


@pytest.mark.parametrize("command", ["leaderboard", "report", "export", "sweep"])
@pytest.mark.parametrize("damage", ["fake", "truncated"])
def test_a_fake_or_truncated_store_is_one_line(tmp_path, command, damage):
    db = _store(tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if damage == "fake":
        db.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    else:
        db.write_bytes(db.read_bytes()[:3000])
    for side in ("s.db-wal", "s.db-shm"):
        (tmp_path / side).unlink(missing_ok=True)
    args = {"leaderboard": ["leaderboard", db], "report": ["report", db, "--html", tmp_path / "site"],
            "export": ["store", "export", db, tmp_path / "out"],
            "sweep": ["sweep", "--store", db, "--methods", "source", "--datasets", "demo", "--dry-run"]}[command]
    _fails(args, str(db))


def test_a_store_row_that_is_not_a_result_is_one_line(tmp_path):
    db = _store(tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE cells SET doc = ? WHERE id = 'c03'", (json.dumps({**result_doc(), "metrics": []}),))
    _fails(["leaderboard", db], "s.db#c03", "metrics")


def _read_only_mount(folder, command):
    """Run ``command`` with ``folder`` bind-mounted read-only (a user namespace: no root needed)."""
    script = f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder} {folder} && exec {command}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)


def test_reading_commands_read_a_store_on_a_read_only_mount(tmp_path):
    if shutil.which("unshare") is None or _read_only_mount(tmp_path, "true").returncode != 0:
        pytest.skip("no unprivileged mount namespaces here (unshare -rm) to make a read-only mount")
    db = _store(tmp_path)  # WAL mode, its -shm and -wal files beside it
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (tmp_path / "s.db-wal").unlink(missing_ok=True)
    (tmp_path / "s.db-shm").unlink(missing_ok=True)  # as on a mount that was copied without them
    res = _read_only_mount(tmp_path, f"{sys.executable} -m tta leaderboard {db}")
    assert res.returncode == 0, res.stderr
    assert "source" in res.stdout and "Traceback" not in res.stderr
    res = _read_only_mount(tmp_path, f"{sys.executable} -m tta report {db} --html /tmp/{tmp_path.name}-site")
    assert res.returncode == 0, res.stderr
    res = _read_only_mount(tmp_path, f"{sys.executable} -m tta store export {db} /tmp/{tmp_path.name}-out")
    assert res.returncode == 0 and "exported 30" in res.stdout, res.stderr
    # exporting into the read-only folder itself is one line
    res = _read_only_mount(tmp_path, f"{sys.executable} -m tta store export {db} {tmp_path / 'out'}")
    assert res.returncode == 2 and res.stderr.startswith("Error: ") and "Traceback" not in res.stderr, res.stderr
    # a command that must write says so in one line
    res = _read_only_mount(tmp_path, f"{sys.executable} -m tta store import {db} /dev/null")
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr


def test_opening_a_store_read_only_writes_nothing(tmp_path, monkeypatch):
    db = _store(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = sqlite3.connect
    seen = []
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: seen.append(a[0]) or real(*a, **k))
    assert len(Store(db, readonly=True).documents()) == 30
    assert seen and all("mode=ro" in str(s) or "immutable=1" in str(s) for s in seen)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before and p.name != "s.db-shm"} == \
        {k: v for k, v in before.items() if k != "s.db-shm"}


# -- result files --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("versions"), "versions"),
    (lambda d: d["runtime"].__setitem__("config", ["method", "source"]), "runtime.config"),
    (lambda d: d["metrics"].__setitem__("domain_errors", {"fog": 40.0, "snow": 60.0}), "domain_errors"),
    (lambda d: d["stream"].__setitem__("seed", "<b>1</b>"), "stream.seed"),
    (lambda d: d["metrics"].__setitem__("ece", float("nan")), "metrics.ece"),
])
def test_store_import_of_a_malformed_result_is_one_line(tmp_path, edit, match):
    doc = result_doc()
    edit(doc)
    (tmp_path / "r.json").write_text(json.dumps(doc))
    _fails(["store", "import", tmp_path / "s.db", tmp_path / "r.json"], "r.json", match)


def test_a_mean_that_is_not_the_mean_of_its_domains_is_refused_by_every_reader(tmp_path):
    """The check lives in the one schema (tta.schema.result_problem), so `tta store import` applies it to a file
    and to the documents of a store, which the leaderboard's own check never saw."""
    doc = result_doc()
    doc["metrics"]["mean_domain_error"] = 45.0  # fog 40 and gaussian_noise 60 average 50
    assert "average 50" in result_problem(doc)
    assert result_problem(result_doc()) is None
    (tmp_path / "r.json").write_text(json.dumps(doc))
    _fails(["store", "import", tmp_path / "new.db", tmp_path / "r.json"], "r.json", "mean_domain_error is 45.0")
    assert not (tmp_path / "new.db").exists()  # refused before the store is opened
    db = _store(tmp_path)
    with sqlite3.connect(db) as con:  # a store edited after it was written
        con.execute("UPDATE cells SET doc = ? WHERE id = 'c03'", (json.dumps(doc),))
    _fails(["store", "import", tmp_path / "other.db", db], "s.db#c03", "mean_domain_error")
    _fails(["leaderboard", db], "s.db#c03", "mean_domain_error")


def test_a_result_whose_domain_errors_differ_from_its_domains_is_not_ranked(tmp_path):
    doc = result_doc()
    doc["metrics"]["domain_errors"] = {"fog": 40.0}  # gaussian_noise left out: the mean would mislead
    (tmp_path / "r.json").write_text(json.dumps(doc))
    _fails(["leaderboard", tmp_path / "r.json"], "domain_errors", "gaussian_noise")
    _fails(["report", tmp_path / "r.json", "--html", tmp_path / "site"], "domain_errors")


# -- order files ---------------------------------------------------------------------------------------------
def test_a_float_index_in_an_order_file_is_refused_not_truncated(setup, tmp_path):
    order = tmp_path / "o.json"
    res = CliRunner().invoke(cli, ["run", *setup, "--export-order", str(order), "-o", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads(order.read_text())
    doc["blocks"][0]["index"][0] = 1.7
    order.write_text(json.dumps(doc))
    _fails(["run", *setup, "--order", order, "-o", tmp_path / "b.json"], "o.json", "1.7", "not an integer")


# -- full disks: neither the result nor the progress is lost ----------------------------------------------------
def _no_space_for(monkeypatch, suffix):
    real = atomic.os.replace

    def replace(src, dst):
        if str(dst).endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)


def test_a_result_that_cannot_be_written_is_saved_elsewhere_and_named(setup, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    _no_space_for(monkeypatch, "/r.json")
    line = _fails(["run", *setup, "--checkpoint-every", "0", "-o", out], "no space left", "saved in")
    spare = line.split("saved in ")[1].split(" instead")[0]
    doc = json.loads(open(spare).read())
    assert doc["metrics"]["num_samples"] == N and not out.exists()
    assert (tmp_path / "r.json.partial.pt").is_file()  # the progress is kept too


def test_without_any_space_the_progress_is_kept_and_named(setup, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    _no_space_for(monkeypatch, ".json")  # the result and its spare copy
    line = _fails(["run", *setup, "--checkpoint-every", "0", "-o", out], "no space left", "r.json.partial.pt", "rerun")
    assert (tmp_path / "r.json.partial.pt").is_file()
    monkeypatch.undo()
    res = CliRunner().invoke(cli, ["run", *setup, "-o", str(out)])
    assert res.exit_code == 0 and "resuming at batch 2 of 3" in res.output, res.output
    assert json.loads(out.read_text())["metrics"]["num_samples"] == N


def test_progress_that_cannot_be_saved_does_not_stop_the_run(setup, tmp_path, monkeypatch, caplog):
    _no_space_for(monkeypatch, ".partial.pt")
    res = CliRunner().invoke(cli, ["run", *setup, "--checkpoint-every", "0", "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["num_samples"] == N
    assert any("without saving progress" in r.getMessage() for r in caplog.records)


def test_a_store_on_a_full_disk_says_so(tmp_path):
    db = _store(tmp_path)
    with sqlite3.connect(db) as con:
        pages = con.execute("PRAGMA page_count").fetchone()[0]
    store = Store(db)
    store.db.execute(f"PRAGMA max_page_count = {pages}")  # what SQLite answers on a full disk: "database or disk is full"
    from tta.errors import WriteError

    with pytest.raises(WriteError, match="free space"):
        for i in range(200):
            store.import_result(f"more{i}", result_doc(), {"pad": "x" * 4000}, "tta run", setting="Continual")
