"""``regime-aware``: ETA while the labels look i.i.d., LAME over UnMix-TNS while they look correlated.

The board shows the two families failing in opposite regimes: entropy minimization over
test-batch statistics (ETA, DeYO) is the best cheap method on i.i.d. labels and collapses
under label correlation, where LAME over UnMix-TNS statistics is the best and is 20 points
worse than the source model on i.i.d. labels. This method runs both branches on copies of
the model and lets an online, label-free detector pick whose prediction to return and
whether ETA takes its step:

- **correlated branch** (always run, no gradients): the model with UnMix-TNS layers
  (``stats_options``, its own defaults otherwise) gives logits and penultimate features;
  LAME's Laplacian adjustment of them is the prediction in the correlated regime. Its
  components move on every batch, so they follow the domain in both regimes.
- **i.i.d. branch**: the model with test-batch statistics (``tbn``, N = 0) and ETA's step
  (``tta.methods.eata.eta_step``, ETA's options and defaults). In the i.i.d. regime it
  adapts and its pre-update logits are the prediction; in the correlated regime it is not
  run (its weights wait for the next i.i.d. stretch).
- **detector** (``RegimeDetector``): per batch, the share of the batch that the correlated
  branch predicts as its most predicted class. UnMix-TNS keeps the source statistics in its
  components, so unlike test-batch statistics it does not remove the class the batch has in
  common: on i.i.d. batches of 10 classes the share is about 0.2, on batches of one or two
  classes 0.35-0.8. The share is smoothed by an exponential moving average (weight ``rho``)
  and the regime switches with hysteresis: to correlated when the average exceeds
  ``enter``, back to i.i.d. when it falls below ``leave``, never during the first
  ``warmup`` batches (the components start at the source statistics, whose predictions on
  a shifted domain favour a few classes). The decision for a batch uses the batches before
  it. The gap between ``enter`` and ``leave`` absorbs the bias UnMix-TNS has for some
  20 batches after a domain change, when its components still hold the previous domain.

Nothing reads labels, the shift's name or δ. State: both branches, ETA's optimizer and
moving average, the detector's average and regime (all in ``state_dict``; ``reset()``
restores the construction state). The output is a probability vector (LAME's, or the
i.i.d. branch's softmax): ``adapter.output == "probabilities"``.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from ..errors import TTAError
from ._adapter import Adapter
from ._bn_swap import batchnorm_layers
from ._gradient import make_optimizer, norm_parameters
from ._model_parts import classifier_layer
from ._options import Option
from ._recipe import Resolved, register_method
from ._stats_policy import get_stats
from ._step_output import StepState
from .eata import ETA_DEFAULTS, ETA_OPTIONS, eta_step, ETAState
from .lame import AFFINITIES, DEFAULT_AFFINITY, DEFAULT_KNN, features_and_logits, lame

log = logging.getLogger(__name__)

#: detector defaults, read off UnMix-TNS's predictions on ResNet-20, seed 2020, five domains at 5,000 images
#: (continual, continual@0.1) and 2,000 per domain (mixed@0.1); see docs/methods.md
RHO, ENTER, LEAVE, WARMUP = 0.1, 0.40, 0.28, 24


def dominant_share(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The share of the batch predicted as its most predicted class (a 0-dim float tensor in [1/B, 1])."""
    return torch.bincount(pred, minlength=num_classes).max().float() / pred.numel()


class RegimeDetector(nn.Module):
    """The smoothed dominant-class share and the regime it implies, with hysteresis (buffers: state)."""

    def __init__(self, rho: float, enter: float, leave: float, warmup: int = 0, start_correlated: bool = False) -> None:
        super().__init__()
        if leave > enter:
            raise TTAError(f"regime detector: leave={leave} must be <= enter={enter}; pass leave <= enter")
        self.rho, self.enter, self.leave, self.warmup = float(rho), float(enter), float(leave), int(warmup)
        self.register_buffer("score", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("correlated", torch.tensor(bool(start_correlated)))
        self.register_buffer("switches", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, score: torch.Tensor) -> bool:
        """Fold one batch's score into the average; return whether the next batch is treated as correlated."""
        s = score.to(self.score)
        self.score.copy_(s if int(self.seen) == 0 else torch.lerp(self.score, s, self.rho))
        self.seen += 1
        was = bool(self.correlated)
        if int(self.seen) < self.warmup:
            return was
        now = float(self.score) > self.enter if not was else float(self.score) >= self.leave
        if now != was:
            self.correlated.fill_(now)
            self.switches += 1
            log.info("regime-aware: after batch %d (average score %.3f) the labels look %s", int(self.seen),
                     float(self.score), "correlated" if now else "i.i.d.")
        return now

    def extra_repr(self) -> str:
        return f"rho={self.rho}, enter={self.enter}, leave={self.leave}, warmup={self.warmup}"


class RegimeBranches(nn.Module):
    """The two copies of the model: ``iid`` (test-batch statistics, adapted by ETA) and ``correlated``
    (UnMix-TNS statistics, frozen weights)."""

    def __init__(self, iid: nn.Module, correlated: nn.Module) -> None:
        super().__init__()
        self.iid = iid
        self.correlated = correlated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TTAError("RegimeBranches is driven by the regime-aware step; call the adapter, not its model")


class RegimeStepState(StepState):
    """ETA's moving average and counters (extra state) plus the detector (buffers)."""

    def __init__(self, detector: RegimeDetector) -> None:
        super().__init__(ETAState(), "regime-aware")
        self.detector = detector


def _regime_step(opts: Resolved):
    eta_kw = {"d_margin": opts["d_margin"], "margin_factor": opts["margin_factor"]}
    lame_kw = {"affinity_kind": opts["affinity"], "knn": opts["knn"], "force_symmetry": opts["force_symmetry"]}

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        branches, memory = adapter.model, adapter.memory
        detector = memory.detector
        with torch.no_grad():
            features, logits_c = features_and_logits(branches.correlated, x)
        if bool(detector.correlated):
            with torch.no_grad():
                out = lame(logits_c, features, **lame_kw)
        else:
            result = eta_step(branches.iid, x, adapter.optimizer, memory.state, **eta_kw)
            memory.record_collapse(result.collapsed)
            out = result.logits.softmax(1)
        detector.update(dominant_share(logits_c.argmax(1), logits_c.shape[1]))
        return out

    return step


@register_method(
    "regime-aware",
    summary="ETA on i.i.d.-looking labels, LAME over UnMix-TNS on correlated ones, chosen online by a label-free "
            "detector (returns probabilities)",
    paper="tta's composition of ETA (Niu et al., ICML 2022), UnMix-TNS (Tomar et al., ICLR 2024) and LAME "
          "(Boudiaf et al., CVPR 2022)",
    options=(
        *(o for o in ETA_OPTIONS if o.name not in ("stats", "stats_options")),
        Option("stats", str, "unmix-tns", "statistics of the correlated branch", choices=("unmix-tns",)),
        Option("stats_options", dict, {"K": 16}, "options of the correlated branch's UnMix-TNS (its defaults "
               "otherwise; K stays 16 on every shift, since the method may not know the shift)"),
        Option("unmix_init", str, "random", "initial UnMix-TNS components: random (the paper's draw) or "
               "stratified (normal quantiles, the source moments matched exactly; tta.methods.unmix_tns)",
               choices=("random", "stratified")),
        Option("affinity", str, DEFAULT_AFFINITY, "LAME feature affinity", choices=AFFINITIES),
        Option("knn", int, DEFAULT_KNN, "LAME neighbours", low=1),
        Option("force_symmetry", bool, False, "LAME: symmetrize the affinity"),
        Option("rho", float, RHO, "detector: weight of the newest batch in the moving average of the "
               "correlated branch's dominant-class share", low=0, open_low=True, high=1),
        Option("enter", float, ENTER, "detector: switch to the correlated regime when the average share exceeds this",
               low=0, high=1),
        Option("leave", float, LEAVE, "detector: switch back to the i.i.d. regime when it falls below this "
               "(<= enter)", low=0, high=1),
        Option("warmup", int, WARMUP, "detector: batches before the first switch (the UnMix-TNS components start "
               "at the source statistics and need a few batches to reach the domain)", low=0),
        Option("start", str, "iid", "regime assumed before the first batch", choices=("iid", "correlated")),
    ),
    defaults=tuple(r for r in ETA_DEFAULTS if "stats" not in r.values),
    notes="needs a BatchNorm model ending in nn.Linear; two model copies; min batch 2",
    min_batch_size=2,
)
def regime_aware(model: nn.Module, opts: Resolved) -> Adapter:
    if not batchnorm_layers(model):
        raise TTAError("method 'regime-aware' needs a model with BatchNorm layers (its branches replace their "
                       "statistics); use 'eta' or 'lame' for other models")
    classifier_layer(model, "regime-aware")  # fail at construction, not at the first batch
    correlated = copy.deepcopy(model)
    get_stats(opts["stats"], "regime-aware").swap(correlated, {**opts["stats_options"], "init": opts["unmix_init"]})
    correlated.requires_grad_(False)
    iid = model
    get_stats("tbn", "regime-aware").swap(iid, {"prior": 0.0})
    iid.requires_grad_(False)
    params = norm_parameters(iid)
    for p in params:
        p.requires_grad_(True)
    detector = RegimeDetector(opts["rho"], opts["enter"], opts["leave"], opts["warmup"], opts["start"] == "correlated")
    adapter = opts.adapter(
        RegimeBranches(iid, correlated), optimizer=make_optimizer(params, opts), step=_regime_step(opts),
        memory=RegimeStepState(detector), needs_grad=True, min_batch_size=2,
        min_batch_reason="the i.i.d. branch normalizes with the statistics of the batch",
    )
    adapter.output = "probabilities"
    return adapter


__all__: list[Any] = ["RegimeDetector", "dominant_share", "regime_aware"]
