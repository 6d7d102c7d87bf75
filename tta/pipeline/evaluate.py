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
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError

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
    collapsed_at: dict[str, int] | None = None
    """First batch (and stream sample) whose logits were NaN or infinite; None when the model never collapsed."""
    nonfinite_samples: int = 0
    """Samples with non-finite logits: counted as errors and left out of the ECE."""
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
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    return float(100 * np.abs(acc_sum - conf_sum).sum() / len(confidence))


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory so far: CUDA allocator peak on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 1024), "process_peak_rss"


class RunInterrupted(KeyboardInterrupt):
    """A run stopped on request between two batches, after saving its progress."""

    def __init__(self, next_batch: int, total: int) -> None:
        super().__init__(f"interrupted before batch {next_batch} of {total}")
        self.next_batch, self.total = next_batch, total

    def __reduce__(self):  # picklable, for worker processes
        return type(self), (self.next_batch, self.total)


class Tally:
    """Running counts of an online pass; ``state()`` / ``from_state`` make a pass resumable."""

    def __init__(self, n_domains: int) -> None:
        self.wrong = np.zeros(n_domains, dtype=np.int64)
        self.seen = np.zeros(n_domains, dtype=np.int64)
        self.conf: list[np.ndarray] = []
        self.correct: list[np.ndarray] = []
        self.preds: list[np.ndarray] = []
        self.batch_errors: list[float] = []
        self.batch_domains: list[int] = []
        self.elapsed = 0.0
        self.collapsed_at: dict[str, int] | None = None
        self.nonfinite = 0

    def add(self, pred: torch.Tensor, conf: torch.Tensor, y: torch.Tensor, domain: torch.Tensor, keep: bool,
            finite: torch.Tensor | None = None) -> None:
        """Count one batch; samples whose ``finite`` is False (non-finite logits) count as wrong and skip the ECE."""
        fin = np.ones(len(pred), dtype=bool) if finite is None else finite.numpy()
        ok = (pred == y).numpy() & fin
        dom = domain.numpy()
        if not fin.all():
            if self.collapsed_at is None:
                self.collapsed_at = {"batch": len(self.batch_errors), "sample": int(self.seen.sum()) + int(np.argmin(fin))}
            self.nonfinite += int((~fin).sum())
        np.add.at(self.seen, dom, 1)
        np.add.at(self.wrong, dom, (~ok).astype(np.int64))
        self.conf.append(conf.numpy()[fin])
        self.correct.append(ok[fin])
        self.batch_errors.append(float(100 * (1 - ok.mean())))
        self.batch_domains.append(int(dom[0]))
        if keep:
            self.preds.append(pred.numpy())

    def state(self) -> dict[str, Any]:
        """Tensors and plain lists only, so ``torch.load(weights_only=True)`` reads it back."""
        cat = lambda xs, dt: torch.from_numpy(np.concatenate(xs)) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
        return {
            "wrong": torch.from_numpy(self.wrong.copy()), "seen": torch.from_numpy(self.seen.copy()),
            "conf": cat(self.conf, torch.float32), "correct": cat(self.correct, torch.bool),
            "preds": cat(self.preds, torch.int64), "batch_errors": list(self.batch_errors),
            "batch_domains": list(self.batch_domains), "elapsed": float(self.elapsed),
            "collapsed_at": [] if self.collapsed_at is None else [self.collapsed_at["batch"], self.collapsed_at["sample"]],
            "nonfinite": int(self.nonfinite),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Tally":
        t = cls(len(state["wrong"]))
        t.wrong, t.seen = state["wrong"].numpy().copy(), state["seen"].numpy().copy()
        t.conf = [state["conf"].numpy()] if len(state["conf"]) else []
        t.correct = [state["correct"].numpy()] if len(state["correct"]) else []
        t.preds = [state["preds"].numpy()] if len(state["preds"]) else []
        t.batch_errors, t.batch_domains = list(state["batch_errors"]), list(state["batch_domains"])
        t.elapsed = float(state["elapsed"])
        at = state.get("collapsed_at") or []
        t.collapsed_at = {"batch": int(at[0]), "sample": int(at[1])} if len(at) == 2 else None
        t.nonfinite = int(state.get("nonfinite", 0))
        return t


def evaluate(
    adapted: torch.nn.Module,
    stream: Any,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    keep_predictions: bool = False,
    start_batch: int = 0,
    tally: Tally | None = None,
    checkpoint: Callable[[int, Tally], None] | None = None,
    checkpoint_every_s: float = 300.0,
    should_stop: Callable[[], bool] | None = None,
) -> OnlineMetrics:
    """Run ``adapted`` once over ``stream`` and measure online error, calibration and speed.

    ``adapted.reset()`` is called before every batch the stream marks ``reset``
    (the start, and every block under the ``iid`` shift). To resume an interrupted
    pass, give the adapter its saved state, ``start_batch`` and the saved ``tally``;
    ``checkpoint(next_batch, tally)`` is called at most every ``checkpoint_every_s``
    seconds so that such a state can be saved. When ``should_stop()`` turns true
    (a signal arrived), the state after the current batch is checkpointed and
    ``RunInterrupted`` is raised.
    """
    device = torch.device(device)
    tally = tally or Tally(len(stream.domains))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = last_saved = time.perf_counter()
    base_elapsed = tally.elapsed
    batches = stream.batches(start_batch)
    for i, batch in enumerate(
        tqdm(batches, total=len(stream), initial=start_batch, disable=not progress, desc="tta run", unit="batch", leave=False),
        start=start_batch,
    ):
        if batch.reset and hasattr(adapted, "reset"):
            adapted.reset()
        try:
            logits = adapted(batch.x.to(device, non_blocking=True))
        except RuntimeError as exc:  # e.g. Adam's step with lr=1e38: a setting out of range, not a bug
            if "overflow" not in str(exc):
                raise
            raise InputError(f"batch {i}: the method's update overflowed float32 ({str(exc).splitlines()[0][:120]}); "
                             "a hyperparameter is out of range (a learning rate such as lr=1e38?): pass smaller "
                             "values") from None
        with torch.no_grad():
            logits = logits.detach().float()
            finite = torch.isfinite(logits).all(dim=1).cpu()
            # an adapter whose output is already probabilities (LAME) is scored as it is
            probabilities = getattr(adapted, "output", "logits") == "probabilities"
            prob = (logits if probabilities else torch.softmax(logits, dim=1)).cpu()
        conf, pred = prob.max(dim=1)
        healthy = tally.collapsed_at is None
        tally.add(pred, conf, batch.y, batch.domain, keep_predictions, finite)
        if healthy and tally.collapsed_at is not None:
            log.warning("the model collapsed at batch %d: its logits are NaN or infinite; such samples count as errors", i)
        now = time.perf_counter()
        tally.elapsed = base_elapsed + now - start
        if checkpoint is not None and i + 1 < len(stream) and now - last_saved >= checkpoint_every_s:
            checkpoint(i + 1, tally)
            last_saved = time.perf_counter()
        if should_stop is not None and i + 1 < len(stream) and should_stop():
            # stopped between batches, so the adapter and the tally agree and a resume is exact
            if checkpoint is not None:
                checkpoint(i + 1, tally)
            raise RunInterrupted(i + 1, len(stream))
    wall = tally.elapsed
    # plain corruption names when every domain has the same severity
    same = len({d.severity for d in stream.domains}) == 1 and len({d.name for d in stream.domains}) == len(stream.domains)
    keys = [d.name if same else d.key for d in stream.domains]
    per_domain = {k: float(100 * w / s) for k, w, s in zip(keys, tally.wrong, tally.seen) if s > 0}
    total = int(tally.seen.sum())
    peak, kind = peak_memory_mb(device)
    return OnlineMetrics(
        domain_keys=keys,
        domain_errors=per_domain,
        overall_error=float(100 * tally.wrong.sum() / max(total, 1)),
        mean_domain_error=float(np.mean(list(per_domain.values()))) if per_domain else 0.0,
        ece=expected_calibration_error(np.concatenate(tally.conf), np.concatenate(tally.correct)) if tally.conf else 0.0,
        batch_errors=tally.batch_errors,
        batch_domains=tally.batch_domains,
        num_samples=total,
        wall_time_s=wall,
        images_per_s=total / wall if wall > 0 else 0.0,
        peak_memory_mb=peak,
        memory_kind=kind,
        collapsed_at=tally.collapsed_at,
        nonfinite_samples=tally.nonfinite,
        predictions=np.concatenate(tally.preds) if keep_predictions and tally.preds else None,
    )
