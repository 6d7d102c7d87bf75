"""Inline SVG charts for the report: geometry computed here, markup (and escaping) in ``tta/report/templates/*.svg.j2``.

No plotting library and nothing loaded from the network. Text widths are estimated generously
(``CHAR_W`` of the font size per character) so labels stay inside their SVG. Colours are the
Okabe-Ito palette, safe for the common colour-vision deficiencies; a panel never draws two series
in one colour.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from markupsafe import Markup

from .render import render

#: Okabe & Ito (2008): distinguishable under deuteranopia, protanopia and tritanopia
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
METHOD, SOURCE, ALERT = "#0072B2", "#000000", "#D55E00"
CHAR_W = 0.62  # of the font size: wider than most sans-serif glyphs, so estimates err on the safe side


def text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_W


def heat(value: float, lo: float, hi: float) -> tuple[str, str]:
    """(background, text colour) for an error cell: light to dark blue, one hue, readable without colour."""
    t = 0.0 if hi <= lo else min(max((value - lo) / (hi - lo), 0.0), 1.0)
    return f"hsl(212, 65%, {96 - 52 * t:.0f}%)", ("#fff" if t > 0.55 else "#111")


def _ticks(top: float) -> list[float]:
    step = 10 if top > 40 else 5 if top > 15 else 2
    return [float(v) for v in np.arange(0, top + 1e-9, step)]


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Running mean over ``window`` batches (shorter at the start, so the curve covers every batch)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return v
    c = np.cumsum(np.r_[0.0, v])
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def bar_chart(labels: Sequence[str], means: Sequence[float], stds: Sequence[float | None],
              seeds: Sequence[Sequence[float]], published: Sequence[float | None] | None = None,
              title: str = "") -> Markup:
    """Horizontal bars of mean error (one series, one colour), ± std whiskers, each known seed as a dot."""
    size, row, top = 12, 22, 12
    left = max([text_width(lab, size) for lab in labels] + [60]) + 16
    width = max(760, left + 420)
    right = 56
    hi = max([m + (s or 0) for m, s in zip(means, stds)] + [v for s in seeds for v in s]
             + [p for p in (published or []) if p is not None] + [1.0])
    hi = float(math.ceil(hi / 10) * 10)
    x = lambda v: left + (width - left - right) * v / hi  # noqa: E731
    bars = []
    for i, (lab, m, s, vals) in enumerate(zip(labels, means, stds, seeds)):
        y = top + i * row
        pub = published[i] if published else None
        bars.append({"label": lab, "y": y, "ty": y + 15, "w": max(x(m) - left, 0.5), "mean": m,
                     "lo": x(m - s) if s else None, "hi": x(m + s) if s else None, "cy": y + row / 2,
                     "dots": [x(v) for v in vals], "vx": x(m + (s or 0)) + 5,
                     "pub": None if pub is None else {"x": x(pub), "v": pub}})
    height = top + len(labels) * row + 40
    return Markup(render("bars.svg.j2", width=width, height=height, left=left, right=right, top=top, size=size,
                         bars=bars, colour=METHOD, title=title or "mean error per method",
                         ticks=[{"x": x(t), "t": t} for t in _ticks(hi)], axis_y=top + len(labels) * row,
                         centre=(left + width - right) / 2))


def small_multiples(series: Sequence[tuple[str, Sequence[float] | None]], source: Sequence[float] | None,
                    boundaries: Sequence[int], *, title: str = "", columns: int = 4,
                    max_points: int = 240) -> Markup:
    """Online error over the stream, one small panel per method on shared axes, source dashed in each.

    Where the method runs more than 10 points above source (smoothed), a strip under the panel's axis
    marks it, leaving the curves visible.
    """
    n = max([len(v) for _, v in series if v] + [len(source) if source else 0, 2])
    window = max(5, n // 60)
    step = max(1, math.ceil(n / max_points))
    pw, ph, pad_l, pad_r, pad_t, pad_b = 300, 140, 30, 8, 22, 26
    gw, gh = pw - pad_l - pad_r, ph - pad_t - pad_b
    rows = math.ceil(len(series) / columns)
    width, height = pw * columns, ph * rows + 28
    src = smooth(source, window) if source else None

    def pts(curve: np.ndarray) -> str:
        idx = np.r_[np.arange(0, len(curve), step), len(curve) - 1] if len(curve) else np.arange(0)
        return " ".join(f"{pad_l + gw * i / (n - 1):.1f},{pad_t + gh * (1 - min(max(curve[i], 0), 100) / 100):.1f}"
                        for i in idx)

    panels = []
    for k, (label, values) in enumerate(series):
        px, py = (k % columns) * pw, (k // columns) * ph
        cur = smooth(values, window) if values else None
        strips = []
        if cur is not None and src is not None:
            m = min(len(cur), len(src))
            bad = np.flatnonzero(cur[:m] > src[:m] + 10)
            for run in (np.split(bad, np.flatnonzero(np.diff(bad) > 1) + 1) if len(bad) else []):
                a, b = int(run[0]), int(run[-1])
                strips.append({"x": pad_l + gw * a / (n - 1), "w": max(gw * (b - a + 1) / (n - 1), 1.0)})
        max_chars = int((pw - 8) / (11 * CHAR_W))
        panels.append({"x": px, "y": py, "label": label if len(label) <= max_chars else label[:max_chars - 1] + "…",
                       "full": label, "curve": pts(cur) if cur is not None else None,
                       "source": pts(src) if src is not None else None, "strips": strips,
                       "left_axis": k % columns == 0})
    cuts = [pad_l + gw * (b - 0.5) / (n - 1) for b in boundaries]
    return Markup(render("multiples.svg.j2", width=width, height=height, pw=pw, ph=ph, pad_l=pad_l, pad_t=pad_t,
                         gw=gw, gh=gh, panels=panels, cuts=cuts, method=METHOD, source_colour=SOURCE, alert=ALERT,
                         yticks=[{"y": pad_t + gh * (1 - t / 100), "t": t} for t in (0, 50, 100)],
                         title=title or "online error over the stream", window=window, n=n))
