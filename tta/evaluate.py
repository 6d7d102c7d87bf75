"""The online evaluation loop: one ``logits = adapted(x)`` per batch, scored as it comes.

Predictions are made while adapting, in a single pass, as in the TTA papers:
the error of a batch is counted from the same forward that adapts on it.
"""
from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

ECE_BINS = 15


@dataclass
class OnlineMetrics:
    """Everything measured during one pass over a stream."""

    domain_keys: list[str]
    domain_errors: dict[str, float]  # error % per domain
    overall_error: float  # error % over all samples
    mean_domain_error: float  # mean of the per-domain errors
    ece: float  # expected calibration error %, 15 equal-width bins
    batch_errors: list[float]  # error % of each batch, in stream order
    batch_domains: list[int]  # domain id of each batch's first sample
    num_samples: int
    wall_time_s: float
    images_per_s: float
    peak_memory_mb: float
    memory_kind: str
    predictions: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "predictions"}
        return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE in %: sum over equal-width confidence bins of |accuracy - confidence| weighted by bin size."""
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    return float(100 * np.abs(acc_sum - conf_sum).sum() / len(confidence))


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory so far: CUDA allocator peak on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 1024), "process_peak_rss"


def evaluate(
    adapted: torch.nn.Module,
    stream: Any,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    keep_predictions: bool = False,
) -> OnlineMetrics:
    """Run ``adapted`` once over ``stream`` and measure online error, calibration and speed.

    ``adapted.reset()`` is called before every batch the stream marks ``reset``
    (the start, and every block under the ``iid`` shift).
    """
    device = torch.device(device)
    n_dom = len(stream.domains)
    wrong = np.zeros(n_dom, dtype=np.int64)
    seen = np.zeros(n_dom, dtype=np.int64)
    conf_all, correct_all, preds = [], [], []
    batch_errors, batch_domains = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for batch in tqdm(stream, total=len(stream), disable=not progress, desc="tta run", unit="batch", leave=False):
        if batch.reset and hasattr(adapted, "reset"):
            adapted.reset()
        logits = adapted(batch.x.to(device, non_blocking=True))
        with torch.no_grad():
            prob = torch.softmax(logits.detach().float(), dim=1).cpu()
        conf, pred = prob.max(dim=1)
        ok = (pred == batch.y).numpy()
        dom = batch.domain.numpy()
        np.add.at(seen, dom, 1)
        np.add.at(wrong, dom, (~ok).astype(np.int64))
        conf_all.append(conf.numpy())
        correct_all.append(ok)
        batch_errors.append(float(100 * (1 - ok.mean())))
        batch_domains.append(int(dom[0]))
        if keep_predictions:
            preds.append(pred.numpy())
    wall = time.perf_counter() - start
    # plain corruption names when every domain has the same severity
    same = len({d.severity for d in stream.domains}) == 1 and len({d.name for d in stream.domains}) == len(stream.domains)
    keys = [d.name if same else d.key for d in stream.domains]
    per_domain = {k: float(100 * w / s) for k, w, s in zip(keys, wrong, seen) if s > 0}
    total = int(seen.sum())
    peak, kind = peak_memory_mb(device)
    return OnlineMetrics(
        domain_keys=keys,
        domain_errors=per_domain,
        overall_error=float(100 * wrong.sum() / max(total, 1)),
        mean_domain_error=float(np.mean(list(per_domain.values()))) if per_domain else 0.0,
        ece=expected_calibration_error(np.concatenate(conf_all), np.concatenate(correct_all)) if conf_all else 0.0,
        batch_errors=batch_errors,
        batch_domains=batch_domains,
        num_samples=total,
        wall_time_s=wall,
        images_per_s=total / wall if wall > 0 else 0.0,
        peak_memory_mb=peak,
        memory_kind=kind,
        predictions=np.concatenate(preds) if keep_predictions and preds else None,
    )
