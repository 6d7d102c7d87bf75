"""The leaderboard: grouping by setting, seed averaging, stream checks, formats, and real runs."""
from __future__ import annotations

import csv
import io
import json
import statistics

import pytest
from click.testing import CliRunner

from tta.cli.main import cli
from tta.errors import InputError
from tta.leaderboard import build, load_results, render
from tta.results import build_result, write_json

DOMAINS = ["gaussian_noise", "contrast"]


def _doc(method, errors, *, seed=0, shift="continual", fingerprint=None, hparams=None, created="2026-01-01T00:00:00"):
    doc = build_result(
        method=method,
        hparams=hparams or {},
        model={"name": "resnet20", "checkpoint": "r.th", "checkpoint_sha256": "ab" * 32},
        data={"dataset": "cifar10", "label": "CIFAR-10-C", "demo": False},
        stream={"fingerprint": fingerprint or f"fp-{shift}-{seed}", "seed": seed, "shift": shift, "severity": 5,
                "batch_size": 64, "n_examples": None, "delta": None, "sorted": False},
        metrics={"domain_keys": DOMAINS, "domain_errors": dict(zip(DOMAINS, errors)),
                 "mean_domain_error": statistics.fmean(errors), "ece": 1.0, "images_per_s": 100.0},
        runtime={"threads": 1, "device": "cpu"},
        versions={},
    )
    doc["created_utc"] = created
    doc["_path"] = f"{method}-{seed}.json"
    return doc


def test_rows_are_ranked_per_setting_and_seeds_are_averaged() -> None:
    docs = [
        _doc("source", [60.0, 80.0]),
        _doc("tbn", [30.0, 20.0], seed=0),
        _doc("tbn", [34.0, 26.0], seed=1),
        _doc("source", [61.0, 79.0], seed=1),
        _doc("tbn", [90.0, 90.0], shift="iid"),
    ]
    boards = build(docs)
    assert [b.setting.shift for b in boards] == ["continual", "iid"]
    continual = boards[0]
    assert [r.label for r in continual.rows] == ["tbn", "source"]
    tbn = continual.rows[0]
    assert sorted(tbn.runs) == [0, 1]
    assert tbn.domain_error("gaussian_noise") == pytest.approx(32.0)
    assert tbn.mean_error == pytest.approx((25.0 + 30.0) / 2)
    assert tbn.spread == pytest.approx(statistics.stdev([25.0, 30.0]))
    assert not continual.warnings
    md = render(boards, "md")
    assert "| 1 | tbn | 0,1 | 32.0 | 23.0 | 27.5 ± 3.5 |" in md


def test_rows_that_share_a_seed_but_not_a_stream_are_flagged() -> None:
    boards = build([_doc("source", [50.0, 50.0], fingerprint="aaa"), _doc("tbn", [40.0, 40.0], fingerprint="bbb")])
    assert len(boards) == 1
    assert any("seed 0" in w and "aaa" in w and "bbb" in w and "not comparable" in w for w in boards[0].warnings)
    assert "> seed 0: the rows saw different streams" in render(boards)


def test_a_rerun_replaces_the_older_result_and_says_so() -> None:
    old = _doc("tbn", [40.0, 40.0], created="2026-01-01T00:00:00")
    new = _doc("tbn", [20.0, 20.0], created="2026-02-01T00:00:00")
    (board,) = build([new, old])
    assert board.rows[0].mean_error == 20.0
    assert any("appears twice" in w for w in board.warnings)


def test_same_method_with_other_hparams_is_its_own_row_labelled_by_the_difference() -> None:
    docs = [_doc("alpha-bn", [30.0, 30.0], hparams={"source_weight": 0.9, "eps": 1e-5}),
            _doc("alpha-bn", [35.0, 35.0], hparams={"source_weight": 0.5, "eps": 1e-5})]
    (board,) = build(docs)
    assert [r.label for r in board.rows] == ["alpha-bn (source_weight=0.9)", "alpha-bn (source_weight=0.5)"]


def test_csv_is_long_format_with_one_line_per_domain_and_mean() -> None:
    text = render(build([_doc("source", [60.0, 80.0]), _doc("tbn", [30.0, 20.0])]), "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2 * (len(DOMAINS) + 1)
    mean_tbn = [r for r in rows if r["method"] == "tbn" and r["domain"] == "mean"][0]
    assert float(mean_tbn["error"]) == pytest.approx(25.0) and mean_tbn["rank"] == "1"
    with pytest.raises(InputError, match="choose one of"):
        render([], "html")


def test_loading_skips_foreign_json_in_folders_but_refuses_a_named_one(tmp_path) -> None:
    doc = _doc("source", [50.0, 50.0])
    doc.pop("_path")
    write_json(tmp_path / "r.json", doc)
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    (tmp_path / "broken.json").write_text("{")
    docs = load_results([tmp_path])
    assert [d["_path"] for d in docs] == [str(tmp_path / "r.json")]
    with pytest.raises(InputError, match="not a tta result"):
        load_results([tmp_path / "notes.json"])
    with pytest.raises(InputError, match="does not exist"):
        load_results([tmp_path / "missing"])


def test_cli_on_an_empty_folder_explains_how_to_get_results(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["leaderboard", str(tmp_path)])
    assert result.exit_code == 2 and "tta run --output" in result.output


@pytest.mark.realdata
def test_leaderboard_of_real_runs_matches_their_files(small_cifar_c_dir, resnet20_checkpoint, tmp_path) -> None:
    common = ["--data-dir", str(small_cifar_c_dir), "--model", "resnet20", "--checkpoint", str(resnet20_checkpoint),
              "--domains", "noise_low,noise_high", "--batch-size", "50", "--shift", "continual"]
    for method in ("source", "tbn"):
        result = CliRunner().invoke(cli, ["run", "-q", "--method", method, *common,
                                          "--output", str(tmp_path / "runs" / f"{method}.json")])
        assert result.exit_code == 0, result.output
    out = tmp_path / "board.json"
    result = CliRunner().invoke(cli, ["leaderboard", str(tmp_path / "runs"), "--format", "json", "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    files = {m: json.loads((tmp_path / "runs" / f"{m}.json").read_text()) for m in ("source", "tbn")}
    assert {r["method"] for r in rows} == {"source", "tbn"} and len({r["setting"] for r in rows}) == 1
    assert rows[0]["fingerprints"] == rows[1]["fingerprints"] and not rows[0]["warnings"]
    for row in rows:
        assert row["mean_error"] == pytest.approx(files[row["method"]]["metrics"]["mean_domain_error"])
        assert row["domain_errors"] == pytest.approx(files[row["method"]]["metrics"]["domain_errors"])
    by_error = sorted(files, key=lambda m: files[m]["metrics"]["mean_domain_error"])
    assert [r["method"] for r in rows] == by_error
