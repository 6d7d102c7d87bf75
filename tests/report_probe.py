"""Measure a report site's pages in headless Chromium, as a reader at a 1,280 px window sees them.

For every page: the ranking table's width against its box and the window, every SVG ``<text>``'s box
against its SVG's box, colours shared by two series of one chart panel, script errors, and whether the
screenshot is blank. No dependency beyond Chromium and Pillow: a copy of the page gets a small script
that writes its measurements into the DOM, read back with ``--dump-dom``.

    python tests/report_probe.py benchmarks/results/leaderboard-full     # prints one line per page
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
WIDTH = 1280

# Installed first in <head>: records every script error before the page's own code runs.
_ERRORS = """<script>window.__probeErrors=[];window.addEventListener('error',function(e){
window.__probeErrors.push(String(e.message||e));});</script>"""

# Run at load: what the assertions need, as JSON in <pre id="probe-result">.
_PROBE = """<script>window.addEventListener('load', function () {
  var W = document.documentElement.clientWidth, out = {width: W, tables: [], svgs: [], panels: []};
  document.querySelectorAll('table.ranked, table.settings').forEach(function (t) {
    var box = t.parentElement;
    out.tables.push({cls: t.className, scrollWidth: box.scrollWidth, clientWidth: box.clientWidth,
                     right: t.getBoundingClientRect().right, window: W});
  });
  document.querySelectorAll('svg').forEach(function (s, i) {
    var r = s.getBoundingClientRect(), bad = [];
    s.querySelectorAll('text').forEach(function (t) {
      var b = t.getBoundingClientRect();
      if (b.width === 0 && b.height === 0) return;
      if (b.left < r.left - 0.5 || b.right > r.right + 0.5 || b.top < r.top - 0.5 || b.bottom > r.bottom + 0.5)
        bad.push({text: t.textContent.slice(0, 40), over: Math.max(r.left - b.left, b.right - r.right,
                                                                      r.top - b.top, b.bottom - r.bottom)});
    });
    out.svgs.push({index: i, cls: s.getAttribute('class'), texts: s.querySelectorAll('text').length, outside: bad});
    var panels = s.querySelectorAll('.panel');
    (panels.length ? Array.prototype.slice.call(panels) : [s]).forEach(function (p) {
      var colours = [];
      p.querySelectorAll('.series, polyline.curve').forEach(function (e) {
        if (e.parentElement.closest('.series')) return;
        var c = e.getAttribute('stroke') || e.getAttribute('fill') || getComputedStyle(e).stroke;
        colours.push(c);
      });
      // pages before the .series markup coloured each bar as its own series
      if (!s.querySelector('.series')) p.querySelectorAll('rect.bar').forEach(function (e) { colours.push(e.getAttribute('fill')); });
      var dup = colours.length - new Set(colours).size;
      out.panels.push({svg: i, series: colours.length, colours: new Set(colours).size, shared: dup});
    });
  });
  out.errors = window.__probeErrors;
  var pre = document.createElement('pre'); pre.id = 'probe-result'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def _chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--enable-logging=stderr", "--v=0", "--hide-scrollbars", *args, url],
                          capture_output=True, text=True, timeout=180)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if re.search(r"Uncaught|CONSOLE\(\d+\)\].*(Error|error)|:ERROR:CONSOLE", line)]


def measure_page(page: Path, shot: Path | None = None, height: int = 1000) -> dict:
    """The measurements of one page (a copy with the probe; its folder is copied so links resolve)."""
    from PIL import Image  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / page.name
        text = page.read_text()
        text = re.sub(r"<head>", "<head>" + _ERRORS, text, count=1)
        text = text.replace("</body>", _PROBE + "</body>") if "</body>" in text else text + _PROBE
        copy.write_text(text)
        dom = _chromium(copy.as_uri(), "--dump-dom", f"--window-size={WIDTH},{height}", "--virtual-time-budget=5000")
        found = re.search(r'<pre id="probe-result">(.*?)</pre>', dom.stdout, re.S)
        if not found:
            raise RuntimeError(f"no probe result from {page}: {dom.stderr[-1500:]}")
        out = json.loads(html.unescape(found.group(1)))
        out["console"] = _console_errors(dom.stderr)
        out["page_errors"] = re.findall(r'<pre id="js-errors"[^>]*>([^<]+)</pre>', dom.stdout)
        png = shot or Path(tmp) / "shot.png"
        res = _chromium(page.resolve().as_uri(), f"--screenshot={png}", f"--window-size={WIDTH},{height}")
        if res.returncode != 0 or not png.exists():
            raise RuntimeError(f"no screenshot of {page}: {res.stderr[-1500:]}")
        px = np.asarray(Image.open(png).convert("L"), dtype=float)
        out["screenshot"] = {"std": float(px.std()), "dark": float((px < 128).mean()), "size": list(px.shape)}
    return out


def click_sort(page: Path, header: str, clicks: int = 1) -> list[list[str]]:
    """The rows (cell texts) of the page's first sortable table after clicking the header ``header`` ``clicks`` times."""
    script = """<script>window.addEventListener('load', function () {
      var th = Array.prototype.find.call(document.querySelectorAll('table.sortable th'),
                                         function (h) { return h.textContent.trim() === %s; });
      for (var i = 0; i < %d; i++) th.click();
      var rows = Array.prototype.map.call(document.querySelector('table.sortable').tBodies[0].rows,
        function (r) { return Array.prototype.map.call(r.cells, function (c) { return c.textContent.trim(); }); });
      var pre = document.createElement('pre'); pre.id = 'probe-result'; pre.textContent = JSON.stringify(rows);
      document.body.appendChild(pre);
    });</script>""" % (json.dumps(header), clicks)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(page.read_text().replace("</body>", script + "</body>"))
        dom = _chromium(copy.as_uri(), "--dump-dom", f"--window-size={WIDTH},1000", "--virtual-time-budget=5000")
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', dom.stdout, re.S)
    if not found:
        raise RuntimeError(f"no sort result from {page}: {dom.stderr[-1500:]}")
    return json.loads(html.unescape(found.group(1)))


def summary(name: str, m: dict) -> str:
    """One line: the numbers each assertion reads."""
    tables = "; ".join(f"{t['cls']} scroll {t['scrollWidth']}/{t['clientWidth']} right {t['right']:.0f}/{t['window']}"
                       for t in m["tables"]) or "no ranking table"
    outside = sum(len(s["outside"]) for s in m["svgs"])
    worst = max((o["over"] for s in m["svgs"] for o in s["outside"]), default=0.0)
    shared = max((p["shared"] for p in m["panels"]), default=0)
    crowded = max((p["series"] for p in m["panels"]), default=0)
    return (f"{name}: {tables} | svg texts outside their svg: {outside} (worst {worst:.0f} px) | "
            f"most series in a panel {crowded}, sharing a colour {shared} | errors "
            f"{len(m['errors']) + len(m['console']) + len(m['page_errors'])} | screenshot std {m['screenshot']['std']:.1f}")


def violations(m: dict) -> list[str]:
    """What fails the report's layout assertions (empty when the page passes)."""
    bad = []
    if not m["tables"]:
        bad.append("no ranking table")
    for t in m["tables"]:
        if t["scrollWidth"] > t["clientWidth"] or t["right"] > t["window"] + 0.5:
            bad.append(f"table {t['cls']} scrolls: {t['scrollWidth']} > {t['clientWidth']} (right {t['right']:.0f})")
    for s in m["svgs"]:
        for o in s["outside"]:
            bad.append(f"svg {s['index']} text {o['text']!r} outside by {o['over']:.1f} px")
    for p in m["panels"]:
        if p["shared"]:
            bad.append(f"svg {p['svg']}: {p['series']} series in {p['colours']} colours")
    bad += [f"error: {e}" for e in m["errors"] + m["console"] + m["page_errors"]]
    if m["screenshot"]["std"] <= 10 or m["screenshot"]["dark"] <= 0.001:
        bad.append(f"blank screenshot (std {m['screenshot']['std']:.1f})")
    return bad


if __name__ == "__main__":
    failed = 0
    for folder in sys.argv[1:]:
        for page in sorted(Path(folder).glob("*.html")):
            m = measure_page(page)
            print(summary(f"{folder}/{page.name}", m))
            failed += bool(violations(m))
    sys.exit(1 if failed else 0)
