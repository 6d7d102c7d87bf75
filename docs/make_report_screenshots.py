"""Screenshots of the full board's summary page and one setting page, as a reader sees them at 1,280 px.

    python docs/make_report_screenshots.py      # writes docs/report-summary.png, docs/report-setting.png

Headless Chromium renders the committed site (benchmarks/results/leaderboard-full); each shot is cut to its
first screens and stored with a small palette, so the PNGs stay small.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "benchmarks" / "results" / "leaderboard-full"
SHOTS = {"report-summary.png": ("index.html", 1150), "report-setting.png": ("setting-3.html", 1150)}


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found; install it (apt-get install -y chromium) and rerun")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (page, height) in SHOTS.items():
            raw = Path(tmp) / name
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--screenshot={raw}", f"--window-size=1280,{height}", (SITE / page).as_uri()],
                           check=True, capture_output=True, timeout=120)
            img = Image.open(raw).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
            img.save(ROOT / "docs" / name, optimize=True)
            print(f"docs/{name}: {page} at 1280x{height}, {(ROOT / 'docs' / name).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
