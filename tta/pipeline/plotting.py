"""``--plot``: the per-batch online error curve with domain boundaries (matplotlib, ``plot`` extra)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TTAError
from ..atomic import write_bytes


def plot_error_curve(doc: dict[str, Any], path: str | Path, window: int = 10) -> None:
    """Draw batch error (and its running mean over ``window`` batches) against batch number."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise TTAError("--plot needs matplotlib; pip install 'tta-toolkit[plot]' or drop --plot") from None
    m = doc["metrics"]
    err = np.asarray(m["batch_errors"], dtype=float)
    dom = np.asarray(m["batch_domains"])
    keys = m["domain_keys"]
    fig, ax = plt.subplots(figsize=(10, 3.5))
    x = np.arange(len(err))
    ax.plot(x, err, lw=0.6, alpha=0.4, label="batch error")
    if len(err) >= window:
        smooth = np.convolve(err, np.ones(window) / window, mode="valid")
        ax.plot(x[window - 1 :], smooth, lw=1.5, label=f"running mean ({window} batches)")
    # a boundary wherever the domain of consecutive batches changes
    if doc["stream"]["shift"] != "mixed":
        for b in np.flatnonzero(dom[1:] != dom[:-1]) + 1:
            ax.axvline(b - 0.5, color="grey", lw=0.5, ls="--")
        starts = np.r_[0, np.flatnonzero(dom[1:] != dom[:-1]) + 1]
        for s in starts:
            ax.text(s, 101, keys[dom[s]], rotation=60, fontsize=6, va="bottom")
    title = f"{doc['method']['name']} on {doc['data']['label']} ({doc['stream']['shift']})"
    ax.set_title(("DEMO — " if doc.get("demo") else "") + title, fontsize=9, pad=40)
    ax.set_xlabel("batch")
    ax.set_ylabel("error %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".") or "png"
    fig.savefig(buf, format=fmt, dpi=120)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
