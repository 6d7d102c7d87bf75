"""tta report: the site's numbers, labels, flags, escaping, and its layout in headless Chromium."""
from __future__ import annotations

import copy
import csv
import io
import json
import re
import statistics
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import report_fixture as F
from report_probe import CHROMIUM, click_sort, measure_page, violations
from tta.report import load_published, matching, write_site
from tta.report.published import DEFAULT_FILE
from tta.report.svg import OKABE_ITO, heat, small_multiples, smooth
from tta.report.view import (CORRELATION_MARGIN, DIVERGE_GAP, UNSTABLE_STD, diverges, exploits_correlation,
                             unstable)

ROOT = Path(__file__).resolve().parents[1]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")


def _small() -> list[dict]:
    """source, tbn (two seeds) and a tent that ends far above source, on one continual setting."""
    flat = [40.0] * 60
    rising = [30.0] * 20 + list(np.linspace(30, 95, 40))
    mk = lambda m, errs, curve, seed, ips: F.doc(m, {}, "continual", None, seed, errs + [errs[-1]] * 12,  # noqa: E731
                                                  curve, ips=ips)
    return [mk("source", [60, 50, 40], flat, 1, 200.0), mk("source", [60, 50, 40], flat, 2, 200.0),
            mk("tbn", [30, 20, 25], [25.0] * 60, 1, 100.0), mk("tbn", [34, 24, 29], [27.0] * 60, 2, 100.0),
            mk("tent", [30, 50, 90], rising, 1, 50.0)]


class _Cells(HTMLParser):
    """Text of every <td> per <tr class=...> row, per table class."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, str, list[str]]] = []
        self._table, self._cls, self._cells, self._in = "", "", None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("class", "")
        elif tag == "tr":
            self._cls, self._cells = a.get("class", ""), []
        elif tag == "td" and self._cells is not None:
            self._in = True
            self._cells.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in = False
        elif tag == "tr" and self._cells is not None:
            self.rows.append((self._table, self._cls, self._cells))
            self._cells = None

    def handle_data(self, data):
        if self._in:
            self._cells[-1] += data


def _parse(path: Path) -> list[tuple[str, str, list[str]]]:
    p = _Cells()
    p.feed(path.read_text())
    return [r for r in p.rows if r[2]]  # header rows hold no <td>


def test_setting_page_numbers_are_the_means_spreads_deltas_and_costs(tmp_path) -> None:
    write_site(_small(), tmp_path)
    ranked = {c[1]: c for t, cls, c in _parse(tmp_path / "setting-1.html") if cls == "measured"}
    assert list(ranked) == ["tbn", "source", "tent"]  # by mean error
    tbn = ranked["tbn"]
    means = [statistics.fmean([30, 20, 25] + [25] * 12), statistics.fmean([34, 24, 29] + [29] * 12)]
    assert tbn[3] == f"{statistics.fmean(means):.1f} ± {statistics.stdev(means):.1f}"
    src = statistics.fmean([60, 50, 40] + [40] * 12)
    assert tbn[4] == f"{statistics.fmean(means) - src:+.1f}"  # Δ vs source
    assert tbn[7] == "2.00" and ranked["tent"][7] == "4.00"  # × source forward = 200 img/s / own img/s
    assert "diverges over the stream" in ranked["tent"][9] and "diverges" not in tbn[9]
    assert tbn[9] == "unstable across seeds"  # its seeds' means differ by 4 points: std 2.8 > 2
    heat_rows = {c[0]: c[1:] for t, cls, c in _parse(tmp_path / "setting-1.html") if t == "heatmap"}
    assert heat_rows["tbn"][:3] == ["32.0", "22.0", "27.0"]  # per-domain mean over seeds
    # each variant's provenance is folded, with every seed's fingerprint and a copy-pasteable command
    html = (tmp_path / "setting-1.html").read_text()
    assert html.count("<details") == 3 and html.count("<pre>tta run --method") == 5


def test_summary_marks_the_best_of_each_column_ranks_and_worst_case(tmp_path) -> None:
    docs = F.board(n_variants=5, seeds=(1, 2))
    write_site(docs, tmp_path)
    rows = [c for t, cls, c in _parse(tmp_path / "index.html") if "summary" in t]
    assert len(rows) == 5
    html = (tmp_path / "index.html").read_text()
    assert html.count('class="best"') == 3  # one per setting column
    js = json.loads((tmp_path / "leaderboard.json").read_text())["rows"]
    for k, setting in enumerate(sorted({r["setting"] for r in js}, key=lambda s: ("mixed" in s, "delta" in s))):
        col = sorted((r for r in js if r["setting"] == setting), key=lambda r: r["mean_error"])
        best = next(c for c in rows if c[1] == col[0]["label"])
        assert best[2 + k].endswith("#1")
    for c in rows:  # worst Δ = the largest (mean - source's mean) over settings
        mine = {r["setting"]: r["mean_error"] for r in js if r["label"] == c[1]}
        src = {r["setting"]: r["mean_error"] for r in js if r["label"] == "source"}
        assert c[6] == f"{max(mine[s] - src[s] for s in mine):+.1f}" and c[5] == f"{statistics.fmean(mine.values()):.1f}"


def test_composed_variant_has_one_label_without_braces_in_html_markdown_and_csv(tmp_path) -> None:
    docs = F.board(n_variants=28, seeds=(1,))
    for d in docs:  # results that record only resolved hyperparameters (as the small board's did) label the same
        if d["method"]["name"] == "cotta" and d["runtime"]["config"]["options"]:
            del d["runtime"]["config"]["options"]
    write_site(docs, tmp_path)
    label = "lame + unmix-tns"
    assert label in {c[1] for t, cls, c in _parse(tmp_path / "setting-1.html") if cls == "measured"}
    assert label in {c[1] for t, cls, c in _parse(tmp_path / "index.html") if "summary" in t}
    md_labels = {line.split("|")[1].strip() for line in (tmp_path / "leaderboard.md").read_text().splitlines()
                 if line.startswith("| ") and "---" not in line}
    assert label in md_labels
    csv_labels = {r["method"] for r in csv.DictReader(io.StringIO((tmp_path / "leaderboard.csv").read_text()))}
    assert label in csv_labels and "tent lr=0.0001" in csv_labels and "cotta + unmix-tns" in csv_labels
    assert len(csv_labels) == 28
    html_labels = {c[1] for page in tmp_path.glob("setting-*.html") for t, cls, c in _parse(page) if cls == "measured"}
    assert html_labels == csv_labels
    assert md_labels >= csv_labels
    assert not any(ch in lab for lab in csv_labels for ch in "{}'")


# ---- flag rules, on constructed rows ----

def test_exploits_label_correlation_fires_only_for_a_gain_under_correlation_paid_for_on_iid_labels() -> None:
    m = CORRELATION_MARGIN
    assert exploits_correlation([+20.0], [-39.0, -12.0]) is True  # LAME: 20 worse on i.i.d., 39 better mixed
    assert exploits_correlation([-11.7], [-11.7]) is False  # IABN: better everywhere
    assert exploits_correlation([+20.0], [+25.0]) is False  # worse everywhere: not a correlation exploit
    assert exploits_correlation([m / 2], [-30.0]) is False  # within the margin on i.i.d.
    assert exploits_correlation([], [-30.0]) is None  # no i.i.d. setting: cannot tell


def test_unstable_across_seeds_fires_above_the_stated_std() -> None:
    assert unstable([0.3, UNSTABLE_STD + 0.1]) is True
    assert unstable([0.3, UNSTABLE_STD, None]) is False


def test_diverges_fires_for_a_method_that_drifts_away_and_not_for_iabn_in_a_mixed_stream() -> None:
    rng = np.random.default_rng(0)
    n = 500
    source = 58 + 8 * rng.standard_normal(n)  # mixed stream: domains change batch to batch
    iabn = source - 11.7 + 2 * rng.standard_normal(n)  # per-instance: steadily better than source
    assert diverges(list(iabn), list(source)) is False
    drift = np.r_[np.full(n // 2, 40.0), np.linspace(40, 90, n - n // 2)] + rng.standard_normal(n)
    assert diverges(list(drift), list(source)) is True
    stuck = np.full(n, 85.0)  # bad from the first batch on (batch statistics under correlation): no drift
    assert diverges(list(stuck), list(source)) is False
    # a continual stream that ends on easy domains: a flat method is not diverging although source drops
    falling_source = np.linspace(80, 40, n)
    assert diverges(list(np.full(n, 55.0)), list(falling_source)) is False
    # rising by more than the gap but staying near source is not diverging either
    assert diverges(list(np.linspace(30, 30 + DIVERGE_GAP + 5, n)), list(np.full(n, 45.0))) is False


def test_flags_reach_the_pages_with_their_rule(tmp_path) -> None:
    docs = F.board(n_variants=3, seeds=(1, 2))  # source, tbn, tbn-ema
    for d in docs:  # tbn-ema: worse than source on i.i.d., far better under correlation
        if d["method"]["name"] == "tbn-ema":
            iid = d["stream"]["delta"] is None
            e = 90.0 if iid else 5.0
            d["metrics"]["domain_errors"] = {k: e for k in F.DOMAINS}
            d["metrics"]["mean_domain_error"] = e
            d["metrics"]["batch_errors"] = [e] * len(d["metrics"]["batch_errors"])
    write_site(docs, tmp_path)
    rows = {c[1]: c for t, cls, c in _parse(tmp_path / "index.html") if "summary" in t}
    assert rows["tbn-ema"][-1].startswith("label corr.") and "label corr." not in rows["tbn"][-1]  # rule: below
    assert 'title="exploits label correlation">label corr.<' in (tmp_path / "index.html").read_text()
    assert "more than 2 points worse than source on i.i.d. labels" in (tmp_path / "index.html").read_text()


# ---- untrusted values: escaped by the templates ----

PAYLOADS = ['<script>alert(9)</script>', '"><svg onload=alert(6)>', "<img src=x onerror=alert(1)>"]


def _poison(doc: dict, k: int = 0, typed: bool = False) -> dict:
    """``doc`` with every string value (and the domain names) replaced by an XSS payload; with ``typed``, also
    the seed, the peak memory and a batch error (fields the result schema types as numbers)."""
    counter = [k]

    def walk(x, path=()):
        if isinstance(x, dict):
            return {key: walk(v, path + (key,)) for key, v in x.items()}
        if isinstance(x, list):
            return [walk(v, path) for v in x]
        if isinstance(x, str) and path != ("schema",) and path != ("created_utc",):
            counter[0] += 1
            return f"{x}{PAYLOADS[counter[0] % len(PAYLOADS)]}"
        return x

    out = walk(copy.deepcopy(doc))
    m = out["metrics"]
    names = [f"{d}{PAYLOADS[i % 3]}" for i, d in enumerate(doc["metrics"]["domain_keys"])]
    m["domain_errors"] = dict(zip(names, doc["metrics"]["domain_errors"].values()))
    m["domain_keys"] = names
    if typed:
        out["stream"]["seed"] = "<script>alert(9)</script>"
        m["peak_memory_mb"] = "<script>alert(9)</script>"
        m["batch_errors"] = m["batch_errors"][:-1] + ["<script>alert(9)</script>"]
    out["runtime"]["config"]["options"] = {"source_data": "sd_<svg onload=alert(6)>.npy", "lr<script>": "<b>x"}
    return out


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, [k for k, _ in attrs]))


def _assert_no_markup(folder: Path) -> None:
    """No payload survives as markup, parsed as a browser would: one <script> (the page's own), no event-handler
    attribute, no <img>, no <svg> but the charts'; Markdown holds no '<' at all (HTML in Markdown is live)."""
    for f in folder.glob("*.html"):
        p = _Tags()
        p.feed(f.read_text())
        assert [t for t, _ in p.tags].count("script") == 1, f.name
        assert not [(t, a) for t, attrs in p.tags for a in attrs if a.lower().startswith("on")], f.name
        assert "img" not in {t for t, _ in p.tags}, f.name
        assert all("viewbox" in attrs for t, attrs in p.tags if t == "svg"), f.name
    for f in folder.glob("*.md"):
        assert "<" not in f.read_text(), f.name


def test_xss_payload_in_every_string_field_is_escaped_in_html_and_markdown(tmp_path) -> None:
    from tta.cli.main import cli  # noqa: PLC0415

    base = F.doc("tent", {"stats": "unmix-tns"}, "continual", 0.1, 1, [30.0] * 15, [30.0] * 60)
    src = F.doc("source", {}, "continual", 0.1, 1, [50.0] * 15, [50.0] * 60)
    docs = [_poison(base), _poison(src, 1)]
    docs[0]["method"]["name"] = "tent<script>alert(9)</script>"  # an unknown method name, shown as written
    for i, d in enumerate(docs):
        (tmp_path / f"r{i}.json").write_text(json.dumps(d))
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "r0.json"), str(tmp_path / "r1.json"),
                                   "--html", str(tmp_path / "site")])
    assert res.exit_code == 0, res.output
    _assert_no_markup(tmp_path / "site")
    page = (tmp_path / "site" / "setting-1.html").read_text()
    assert "&lt;script&gt;alert(9)&lt;/script&gt;" in page  # shown, as text
    md = CliRunner().invoke(cli, ["leaderboard", str(tmp_path / "r0.json"), str(tmp_path / "r1.json")])
    assert md.exit_code == 0 and "<" not in md.output
    # the same documents after `tta store import`: stored, then reported (a store that refuses them is safe too)
    imp = CliRunner().invoke(cli, ["store", "import", str(tmp_path / "s.db"), str(tmp_path / "r0.json"),
                                   str(tmp_path / "r1.json")])
    if imp.exit_code != 0:
        assert isinstance(imp.exception, SystemExit) and "Error" in imp.output, imp.output
    else:
        res = CliRunner().invoke(cli, ["report", str(tmp_path / "s.db"), "--html", str(tmp_path / "from-store")])
        assert res.exit_code == 0, res.output
        _assert_no_markup(tmp_path / "from-store")
        assert "&lt;script&gt;alert(9)&lt;/script&gt;" in (tmp_path / "from-store" / "setting-1.html").read_text()
    assert "&lt;script&gt;" in md.output
    # payloads where the schema wants numbers (seed, memory, a batch error): refused in one line that
    # repeats no markup, by report, leaderboard and store import alike
    for i, d in enumerate([_poison(base, typed=True), _poison(src, 1, typed=True)]):
        (tmp_path / f"t{i}.json").write_text(json.dumps(d))
    typed = [str(tmp_path / "t0.json"), str(tmp_path / "t1.json")]
    for args in (["report", *typed, "--html", str(tmp_path / "typed")], ["leaderboard", *typed],
                 ["store", "import", str(tmp_path / "t.db"), *typed]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code != 0 and "Error" in res.output and "<" not in res.output, (args, res.output)


def test_leaderboard_refuses_a_mean_that_is_not_the_mean_of_its_domains(tmp_path) -> None:
    from tta.errors import InputError  # noqa: PLC0415
    from tta.report.leaderboard import load_results  # noqa: PLC0415

    d = F.doc("tbn", {}, "continual", None, 1, [55.5, 41.0] + [50.0] * 13, [50.0] * 60)
    for bad in (1.0, float("nan")):
        d["metrics"]["mean_domain_error"] = bad
        (tmp_path / "r.json").write_text(json.dumps(d))
        with pytest.raises(InputError, match="mean_domain_error"):
            load_results([tmp_path / "r.json"])


def test_an_archived_row_is_validated_like_a_result_file() -> None:
    from tta.errors import InputError  # noqa: PLC0415
    from tta.report.view import archived_settings  # noqa: PLC0415

    row = {"setting": "CIFAR-10-C · resnet20 · shift mixed · batch 64 · delta 0.1", "method": "tbn", "seeds": [1],
           "mean_error": 1.0, "domain_errors": {"fog": 55.5, "snow": 41.0}}
    with pytest.raises(InputError, match="domain errors average 48.25"):
        archived_settings({"schema": "tta.leaderboard", "rows": [row]})
    for bad in (float("nan"), "<b>"):
        with pytest.raises(InputError, match="malformed"):
            archived_settings({"schema": "tta.leaderboard", "rows": [{**row, "mean_error": bad}]})
    ((meta, cells),) = archived_settings({"schema": "tta.leaderboard", "rows": [{**row, "mean_error": 48.25}]}).values()
    assert meta["shift"] == "mixed" and meta["delta"] == 0.1 and cells[0].seed_errors == {1: 48.25}


# ---- charts ----

def test_small_multiples_one_panel_per_method_source_dashed_and_collapse_strips_below_the_axis() -> None:
    svg = small_multiples([("tbn", [25.0] * 30), ("tent", [30.0] * 10 + [95.0] * 20)], [40.0] * 30, [10, 20])
    assert svg.count('class="panel"') == 2 and svg.count("stroke-dasharray") == 2  # source dashed in each panel
    assert svg.count('class="collapse"') == 1  # one run above source+10, tent only
    strip_y = float(re.search(r'class="collapse" x="[\d.]+" y="([\d.]+)"', svg).group(1))
    assert strip_y > 22 + 92  # under the plot area, so no curve is covered
    colours = re.findall(r'stroke="(#[0-9A-Fa-f]{6})" stroke-width', svg)
    assert set(colours) <= set(OKABE_ITO)


def test_smoothing_is_a_running_mean_and_heat_darkens_with_error() -> None:
    assert np.allclose(smooth([0.0, 10.0, 20.0, 30.0], 2), [0, 5, 15, 25])
    light, dark = heat(0, 0, 10), heat(10, 0, 10)
    assert light[0].endswith("96%)") and dark[0].endswith("44%)") and dark[1] == "#fff"


# ---- published numbers ----

def test_published_numbers_all_carry_a_source_and_match_only_their_setting() -> None:
    entries = load_published(DEFAULT_FILE)
    assert entries and all(e["source"].get("commit") or e["source"].get("paper") for e in entries)
    wrn = F.doc("tbn", {}, "continual", None, 1, [20.0] * 15, [20.0] * 60)
    wrn["model"]["name"] = "wrn-28-10"
    got = {e["method"]: e["mean_error"] for e in matching(entries, wrn)}
    assert got["source"] == 43.5 and got["tbn"] == 20.4  # Continual CIFAR10-C WRN-28 row
    assert matching(entries, F.doc("tbn", {}, "continual", None, 1, [20.0] * 15, [20.0] * 60)) == []
    wrn["stream"]["delta"] = 0.1
    assert matching(entries, wrn) == []


def test_published_rows_are_shown_beside_measured_ones_and_marked(tmp_path) -> None:
    docs = [F.doc(m, {}, "continual", None, 1, [e] * 15, [e] * 60) for m, e in (("source", 43.0), ("tbn", 20.5))]
    for d in docs:
        d["model"]["name"] = "wrn-28-10"
    write_site(docs, tmp_path, load_published(DEFAULT_FILE))
    published = [c for t, cls, c in _parse(tmp_path / "setting-1.html") if cls == "published"]
    assert any(c[1].startswith("BN-1 (tbn)") and "published" in c[1] and c[3] == "20.4" for c in published)
    assert "not measured here" in (tmp_path / "setting-1.html").read_text()


# ---- one board from an archived report and result files ----

def test_an_archived_row_of_one_seed_pools_exactly_with_result_files_of_other_seeds(tmp_path) -> None:
    from tta.errors import InputError  # noqa: PLC0415
    from tta.report.site import build_views  # noqa: PLC0415

    docs = F.board(n_variants=2, settings=F.SETTINGS[:1], seeds=(1, 2, 3))
    write_site([d for d in docs if d["stream"]["seed"] == 1], tmp_path / "old")
    archive = json.loads((tmp_path / "old" / "leaderboard.json").read_text())
    views = build_views([d for d in docs if d["stream"]["seed"] != 1], [archive])
    whole = build_views(docs)
    for a, b in zip(views[0].cells, whole[0].cells):
        assert a.label == b.label and a.seeds == b.seeds == [1, 2, 3]
        assert a.mean == pytest.approx(b.mean) and a.std == pytest.approx(b.std)
    # an archive written by this report keeps each seed's error, so rows of several seeds pool exactly too
    write_site([d for d in docs if d["stream"]["seed"] != 3], tmp_path / "two")
    two = json.loads((tmp_path / "two" / "leaderboard.json").read_text())
    rest = [d for d in docs if d["stream"]["seed"] == 3]
    assert [c.std for c in build_views(rest, [two])[0].cells] == pytest.approx([c.std for c in whole[0].cells])
    for row in two["rows"]:  # an old report's row of two seeds: only their mean and std are known
        row["seed_errors"] = None
    with pytest.raises(InputError, match="cannot be pooled"):
        build_views(rest, [two])


# ---- layout, as a reader sees it ----

@needs_chromium
def test_every_page_of_a_28_variant_board_fits_1280px_with_labels_inside_and_distinct_colours(tmp_path) -> None:
    site = tmp_path / "site"
    write_site(F.board(), site)
    pages = sorted(site.glob("*.html"))
    assert [p.name for p in pages] == ["index.html", "setting-1.html", "setting-2.html", "setting-3.html"]
    for page in pages:
        m = measure_page(page)
        assert m["width"] == 1280
        assert m["tables"] and all(t["scrollWidth"] <= t["clientWidth"] for t in m["tables"]), m["tables"]
        assert violations(m) == [], (page.name, violations(m))
        if page.name != "index.html":
            assert sum(p["series"] == 2 for p in m["panels"]) == 27  # a panel per variant, source dashed in each


@needs_chromium
def test_summary_sorts_by_a_clicked_column_without_a_network(tmp_path) -> None:
    write_site(F.board(n_variants=6, seeds=(1, 2)), tmp_path)
    worst = [float(r[6]) for r in click_sort(tmp_path / "index.html", "worst Δ vs source")]
    assert worst == sorted(worst) and worst != [float(r[6]) for r in _parse_summary(tmp_path)]
    desc = [float(r[6]) for r in click_sort(tmp_path / "index.html", "worst Δ vs source", clicks=2)]
    assert desc == sorted(worst, reverse=True)
    names = [r[1] for r in click_sort(tmp_path / "index.html", "method")]
    assert names == sorted(names)


def _parse_summary(folder: Path) -> list[list[str]]:
    return [c for t, cls, c in _parse(folder / "index.html") if "summary" in t]


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("board", ["leaderboard", "leaderboard-full"])
def test_committed_boards_pass_the_same_layout_checks(board) -> None:
    for page in sorted((ROOT / "benchmarks" / "results" / board).glob("*.html")):
        assert violations(measure_page(page)) == [], page
