"""tta report: the static site's numbers, charts, published references, and its rendering in headless Chromium."""
from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tta.report import load_published, matching, write_site
from tta.report.published import DEFAULT_FILE
from tta.report.svg import error_curves, heat, smooth
from tta.results import build_result

DOMAINS = ["gaussian_noise", "shot_noise", "fog"]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _doc(method, errors, batch_errors, *, seed=1, ips=100.0, model="resnet20", dataset="cifar10", delta=None):
    n = len(batch_errors)
    per = n // len(DOMAINS)
    return build_result(
        method=method, hparams={},
        model={"name": model, "checkpoint": "m.th", "checkpoint_sha256": "cd" * 32, "norm": "bn"},
        data={"dataset": dataset, "label": "CIFAR-10-C", "demo": False},
        stream={"fingerprint": f"fp{seed}", "seed": seed, "shift": "continual", "severity": 5, "batch_size": 64,
                "n_examples": None, "delta": delta, "sorted": False},
        metrics={"domain_keys": DOMAINS, "domain_errors": dict(zip(DOMAINS, errors)),
                 "mean_domain_error": statistics.fmean(errors), "ece": 2.0, "images_per_s": ips,
                 "peak_memory_mb": 500.0, "memory_kind": "process_peak_rss", "batch_errors": list(batch_errors),
                 "batch_domains": [min(i // per, len(DOMAINS) - 1) for i in range(n)]},
        runtime={"threads": 1, "device": "cpu", "config": {"method": method, "shift": "continual", "seed": seed}},
        versions={"tta": "0.1.0", "torch": "2", "numpy": "2", "python": "3.11"},
    )


def _docs():
    flat = [40.0] * 30
    collapsing = [30.0] * 10 + list(np.linspace(30, 95, 20))  # ends far above no adaptation
    return [
        _doc("source", [60, 50, 40], flat, seed=1, ips=200.0), _doc("source", [60, 50, 40], flat, seed=2, ips=200.0),
        _doc("tbn", [30, 20, 25], [25.0] * 30, seed=1, ips=100.0), _doc("tbn", [34, 24, 29], [27.0] * 30, seed=2, ips=100.0),
        _doc("tent", [30, 50, 90], collapsing, seed=1, ips=50.0),
    ]


class _Cells(HTMLParser):
    """Text of every <td> per <tr class=...> row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self._cls, self._cells, self._in = "", None, False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._cls, self._cells = dict(attrs).get("class", ""), []
        elif tag == "td" and self._cells is not None:
            self._in = True
            self._cells.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in = False
        elif tag == "tr" and self._cells is not None:
            self.rows.append((self._cls, self._cells))
            self._cells = None

    def handle_data(self, data):
        if self._in:
            self._cells[-1] += data


def test_setting_page_numbers_are_the_means_spreads_deltas_and_costs(tmp_path) -> None:
    write_site(_docs(), tmp_path)
    html = (tmp_path / "setting-1.html").read_text()
    parser = _Cells()
    parser.feed(html)
    ranked = {c[1].split()[0]: c for cls, c in parser.rows if cls == "measured"}
    assert list(ranked) == ["tbn", "source", "tent"]  # ranked by mean error: 26.7, 50.0, 56.7
    tbn = ranked["tbn"]
    means = [statistics.fmean([30, 20, 25]), statistics.fmean([34, 24, 29])]
    assert tbn[3] == f"{statistics.fmean(means):.1f} ± {statistics.stdev(means):.1f}"
    assert tbn[4] == f"{statistics.fmean(means) - 50:+.1f}"  # Δ vs source (mean 50)
    assert tbn[5:8] == ["32.0", "22.0", "27.0"]  # per-domain mean over seeds
    assert tbn[-2] == "2.00" and ranked["tent"][-2] == "4.00"  # × source forward = 200 img/s / own img/s
    assert "collapsed" in "".join(ranked["tent"][1:2]) and "collapsed" not in "".join(tbn[1:2])
    # every run has its provenance row with fingerprint, checkpoint sha and a rerun command
    prov = [c for cls, c in parser.rows if cls == "" and len(c) == 7]
    assert len(prov) == 5 and all(c[3].startswith("fp") and c[4] == "cd" * 8 and c[6].startswith("tta run") for c in prov)
    for fmt in ("md", "csv", "json"):
        assert (tmp_path / f"leaderboard.{fmt}").stat().st_size > 0


def test_error_curves_mark_boundaries_and_only_the_collapsing_method() -> None:
    svg = error_curves([("source", [40.0] * 30), ("tbn", [25.0] * 30), ("tent", [30.0] * 10 + [95.0] * 20)],
                       [10, 20], DOMAINS)
    assert svg.count('class="boundary"') == 2
    assert svg.count('class="collapse"') == 1  # one contiguous run above source+10, for tent only
    assert svg.count('class="collapse-curve"') == 1 and "tent above no adaptation" in svg


def test_smoothing_is_a_running_mean_and_heat_spans_green_to_red() -> None:
    v = [0.0, 10.0, 20.0, 30.0]
    assert np.allclose(smooth(v, 2), [0, 5, 15, 25])
    assert heat(0, 0, 10).startswith("hsl(120") and heat(10, 0, 10).startswith("hsl(0")


def test_published_numbers_all_carry_a_source_and_match_only_their_setting() -> None:
    entries = load_published(DEFAULT_FILE)
    assert entries and all(e["source"].get("commit") or e["source"].get("paper") for e in entries)
    wrn = _doc("tbn", [20, 20, 20], [20.0] * 30, model="wrn-28-10")
    got = {e["method"]: e["mean_error"] for e in matching(entries, wrn)}
    assert got["source"] == 43.5 and got["tbn"] == 20.4  # Continual CIFAR10-C WRN-28 row
    assert matching(entries, _doc("tbn", [20, 20, 20], [20.0] * 30)) == []  # resnet20: no published row
    assert matching(entries, _doc("tbn", [1, 1, 1], [1.0] * 30, model="wrn-28-10", delta=0.1)) == []


def test_published_rows_are_shown_beside_measured_ones_and_marked(tmp_path) -> None:
    docs = [_doc("source", [44, 43, 43], [40.0] * 30, model="wrn-28-10"), _doc("tbn", [21, 20, 20], [20.0] * 30,
                                                                              model="wrn-28-10")]
    write_site(docs, tmp_path, load_published(DEFAULT_FILE))
    parser = _Cells()
    parser.feed((tmp_path / "setting-1.html").read_text())
    published = [c for cls, c in parser.rows if cls == "published"]
    assert any(c[1].startswith("BN-1 (tbn)") and "published" in c[1] and c[3] == "20.4" for c in published)
    assert "not measured here" in (tmp_path / "setting-1.html").read_text()


def _chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--enable-logging=stderr", "--v=0", *args, url], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it with apt-get install -y chromium)")
def test_report_renders_in_headless_chromium_with_tables_plots_and_no_errors(tmp_path) -> None:
    from PIL import Image  # noqa: PLC0415

    site = tmp_path / "site"
    write_site(_docs(), site, load_published(DEFAULT_FILE))
    for page in ("index.html", "setting-1.html"):
        url = (site / page).as_uri()
        dom = _chromium(url, "--dump-dom", "--virtual-time-budget=3000")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert 'data-ready="1"' in html  # the page's script ran
        assert re.search(r'<pre id="js-errors" hidden=""></pre>', html), "the page reported a script error"
        assert not re.search(r"Uncaught|CONSOLE\(\d+\)\].*(Error|error)", dom.stderr)
        assert "<table" in html
        if page == "setting-1.html":
            assert html.count('class="ranked"') == 1 and html.count("<svg") == 2
            assert html.count('class="bar"') == 3 and html.count('class="curve"') == 3
        shot = tmp_path / f"{page}.png"
        res = _chromium(url, f"--screenshot={shot}", "--window-size=1200,1400", "--hide-scrollbars")
        assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
        assert pixels.std() > 10  # not a blank page
        assert (pixels < 128).mean() > 0.001  # text and lines were drawn
