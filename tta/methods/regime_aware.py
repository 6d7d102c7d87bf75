"""``regime-aware``: ETA while the labels look i.i.d., LAME over UnMix-TNS while they look correlated.

The board shows the two families failing in opposite regimes: entropy minimization over
test-batch statistics (ETA, DeYO) is the best cheap method on i.i.d. labels and collapses
under label correlation, where LAME over UnMix-TNS statistics is the best and is 20 points
worse than the source model on i.i.d. labels. This method runs both branches on copies of
the model and lets an online, label-free detector pick whose prediction to return and
whether ETA takes its step:

- **correlated branch** (run on every batch with one domain at a time, no gradients): the
  model with UnMix-TNS layers (``stats_options``, its own defaults otherwise) gives logits and
  penultimate features; LAME's Laplacian adjustment of them is the prediction in the
  correlated regime. In the i.i.d. regime it sees only ``detector_images`` evenly spaced
  images of the batch (16: a quarter of the board's batch), counted in lam as the whole
  batch, so its components follow the domain at UnMix-TNS's pace per image for a quarter of
  the forward.
- **i.i.d. branch**: the model with test-batch statistics (``tbn``, N = 0) and ETA's step
  (``tta.methods.eata.eta_step``, ETA's options and defaults). In the i.i.d. regime it
  adapts and its pre-update logits are the prediction; in the correlated regime it is not
  run (its weights wait for the next i.i.d. stretch). A batch larger than ``grad_images``
  (64) is predicted whole without gradients and ETA steps on that many evenly spaced images
  of it, so the step's memory is that of a batch of 64 whatever the batch size.
- **label-correlation detector** (``RegimeDetector``): per batch, the pair agreement of the
  correlated branch's predictions (``pair_agreement``: the share of pairs of images predicted
  as one class, an unbiased estimate of sum_c q_c^2 at every batch size), minus (with one
  domain at a time) the agreement of the batch's class frequencies with the recent batches'.
  UnMix-TNS keeps the source statistics in its components, so unlike test-batch statistics it
  does not remove the class a batch has in common; the subtraction removes what a domain's bias
  adds on i.i.d. labels (0 in expectation), while a class that changes every few batches keeps
  it high. Its exponential moving average (weight ``rho``) switches the regime with hysteresis:
  to correlated above ``enter``, back to i.i.d. below ``leave``, never during the first
  ``warmup`` batches (the components start at the source statistics, whose predictions on a
  shifted domain favour a few classes). The decision for a batch uses the batches before it.
- **domain-mixing detector** (``MixingDetector``): the spread of the images' instance
  log-variances in the first third of the network (``UnMixTNS2d.probe_spread``). A batch of one
  domain differs only by content; a batch drawn from many corruptions adds their differences.
  While the moving average says the batches mix domains, a third copy of the model, the *mixed
  branch* (UnMix-TNS with ``mixed_K`` = 128 components, UnMix-TNS's own setting for mixed domains,
  drawn stratified: ``mixed_init``, whose error barely moves with the seed), takes the correlated
  branch's place (in both regimes), and the detector reads the plain pair
  agreement against ``mixed_enter``/``mixed_leave``. UnMix-TNS chooses K by the setting's name;
  here the choice is read off the stream. With one domain at a time the K = 16 branch runs: its
  components must follow each new domain, which 128 components sharing each batch do too slowly.

Nothing reads labels, the shift's name or δ. State: the three branches, ETA's optimizer and
moving average, both detectors' averages and the regime (all in ``state_dict``; ``reset()``
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
from .unmix_tns import UnMixTNS2d

log = logging.getLogger(__name__)

#: detector defaults, read off per-batch predictions of UnMix-TNS and ETA on ResNet-20, seed 2020 (continual,
#: continual@0.1, switching@0.1; 5,000 images per domain), replayed offline; see docs/methods.md
RHO, ENTER, LEAVE, WARMUP, HISTORY = 0.2, 0.07, 0.03, 24, 0.15
#: the mixed branch's number of UnMix-TNS components: UnMix-TNS's own for mixed domains (its mixed-domain scripts)
MIXED_K = 128
#: style spread above which batches count as mixing domains (ResNet-20, seed 2020, every 15th batch of 16
#: images: one domain per batch 0.14-0.62, mixed domains 0.54-1.30; docs/methods.md)
MIXED_SPREAD = 0.65
#: the detector's thresholds while the batches mix domains (on the plain pair agreement)
MIXED_ENTER, MIXED_LEAVE = 0.25, 0.12
#: images of a batch the correlated branch sees in the i.i.d. regime (a quarter of the board's batch of 64)
DETECTOR_IMAGES = 16
#: most images of a batch ETA's step sees (the board's batch, and the original EATA's on ImageNet-C)
GRAD_IMAGES = 64


def _spaced(n: int, m: int) -> torch.Tensor:
    """``m`` evenly spaced indices of ``range(n)`` (m <= n), starting at 0."""
    return torch.arange(m) * n // m


def pair_agreement(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The share of pairs of different images of the batch predicted as the same class (a 0-dim float tensor).

    It estimates sum_c q_c^2 for the batch's predicted-class distribution q without bias at every batch
    size (n >= 2): 1/C for evenly spread predictions, 1 for a single predicted class. Unlike the share of
    the most predicted class it does not grow as the batch shrinks, so one threshold serves every size."""
    return _agreement(torch.bincount(pred, minlength=num_classes).double(), pred.numel())


def _agreement(counts: torch.Tensor, n: int) -> torch.Tensor:
    if n < 2:
        raise TTAError(f"regime-aware: the detector needs at least 2 images, got {n}; use batches of 2 or more")
    return (counts * (counts - 1)).sum() / (n * (n - 1))


def _fold_(average: torch.Tensor, value: torch.Tensor, weight: float, first: bool) -> None:
    """Exponential moving average in place: the first value is taken as it is."""
    if first:
        average.copy_(value)
    else:
        average.lerp_(value.to(average), weight)


class RegimeDetector(nn.Module):
    """The smoothed correlation score of the correlated branch's predictions and the regime it implies, with
    hysteresis (buffers: state).

    The score of a batch is its pair agreement (``pair_agreement``) while the batches mix domains, and
    otherwise its *excess* agreement: the pair agreement minus the agreement of the batch's predicted-class
    frequencies with those of the recent batches (their moving average, weight ``history``). With i.i.d.
    labels a batch agrees with the recent batches as much as with itself, whatever the classes the domain
    makes the model favour, so the excess is 0 in expectation; with a class that changes every few batches
    (a Dirichlet order over one domain) it is large. Where the domains are mixed the runs of one class are
    longer than any useful history (40-117 batches on the board), so the plain agreement is read, against its
    own thresholds."""

    def __init__(self, rho: float, enter: float, leave: float, warmup: int = 0, start_correlated: bool = False, *,
                 num_classes: int = 10, history: float = 0.15, mixed_enter: float | None = None,
                 mixed_leave: float | None = None) -> None:
        super().__init__()
        mixed_enter = enter if mixed_enter is None else mixed_enter
        mixed_leave = leave if mixed_leave is None else mixed_leave
        for a, b, na, nb in ((leave, enter, "leave", "enter"), (mixed_leave, mixed_enter, "mixed_leave", "mixed_enter")):
            if a > b:
                raise TTAError(f"regime detector: {na}={a} must be <= {nb}={b}; pass {na} <= {nb}")
        self.rho, self.enter, self.leave, self.warmup = float(rho), float(enter), float(leave), int(warmup)
        self.history, self.mixed_enter, self.mixed_leave = float(history), float(mixed_enter), float(mixed_leave)
        self.register_buffer("score", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("correlated", torch.tensor(bool(start_correlated)))
        self.register_buffer("switches", torch.zeros((), dtype=torch.long))
        self.register_buffer("recent", torch.zeros(num_classes, dtype=torch.float64))

    @torch.no_grad()
    def update(self, pred: torch.Tensor, mixed: bool = False) -> bool:
        """Fold one batch's predicted classes into the averages; return whether the next batch is treated as
        correlated. ``mixed``: the batches mix domains (the plain agreement and its thresholds are read)."""
        counts = torch.bincount(pred, minlength=self.recent.numel()).double()
        agreement = _agreement(counts, pred.numel())
        freq = counts / pred.numel()
        first = int(self.seen) == 0
        s = agreement if mixed or first else agreement - freq @ self.recent
        _fold_(self.recent, freq, self.history, first)
        _fold_(self.score, s, self.rho, first)
        self.seen += 1
        was = bool(self.correlated)
        if int(self.seen) < self.warmup:
            return was
        enter, leave = (self.mixed_enter, self.mixed_leave) if mixed else (self.enter, self.leave)
        now = float(self.score) > enter if not was else float(self.score) >= leave
        if now != was:
            self.correlated.fill_(now)
            self.switches += 1
            log.info("regime-aware: after batch %d (average score %.3f) the labels look %s", int(self.seen),
                     float(self.score), "correlated" if now else "i.i.d.")
        return now

    def extra_repr(self) -> str:
        return (f"rho={self.rho}, enter={self.enter}, leave={self.leave}, warmup={self.warmup}, "
                f"history={self.history}, mixed_enter={self.mixed_enter}, mixed_leave={self.mixed_leave}")


def _probe_layers(unmix: list[UnMixTNS2d]) -> list[UnMixTNS2d]:
    """Of a branch's UnMix-TNS layers, those of the first third after the stem (ResNet-20: its first stage), set
    to probe the style spread."""
    probes = unmix[1:1 + len(unmix) // 3] or unmix[:1]
    for layer in probes:
        layer.probe_spread = True
    return probes


class RegimeBranches(nn.Module):
    """The three copies of the model: ``iid`` (test-batch statistics, adapted by ETA), ``correlated`` (UnMix-TNS
    statistics, K = 16, frozen weights) and ``mixed`` (UnMix-TNS with ``mixed_K`` components, frozen weights)."""

    def __init__(self, iid: nn.Module, correlated: nn.Module, mixed: nn.Module) -> None:
        super().__init__()
        self.iid = iid
        self.correlated = correlated
        self.mixed = mixed
        # plain lists, keyed by the branch's attribute name: not submodules
        self._unmix = {name: [m for m in getattr(self, name).modules() if isinstance(m, UnMixTNS2d)]
                       for name in ("correlated", "mixed")}
        self._probes = {name: _probe_layers(layers) for name, layers in self._unmix.items()}

    def _name(self, branch: nn.Module) -> str:
        return "mixed" if branch is self.mixed else "correlated"

    def unmix_branch(self, mixed: bool) -> nn.Module:
        """The branch that predicts under correlation and feeds the detectors: ``mixed`` while the batches
        mix domains."""
        return self.mixed if mixed else self.correlated

    def style_spread(self, branch: nn.Module) -> torch.Tensor | None:
        """``branch``'s last forward's spread of instance log-variances, averaged over its probe layers."""
        values = [layer.spread for layer in self._probes[self._name(branch)] if layer.spread is not None]
        return torch.stack(values).mean() if values else None

    def set_component_rate(self, branch: nn.Module, scale: float) -> None:
        """The pace of ``branch``'s UnMix-TNS components for its next forward (1: UnMix-TNS's own)."""
        for layer in self._unmix[self._name(branch)]:
            layer.rate_scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TTAError("RegimeBranches is driven by the regime-aware step; call the adapter, not its model")


class MixingDetector(nn.Module):
    """Whether the batches mix domains: a moving average of the spread of the images' low-level styles.

    Within a batch of one domain the instance variances of early feature maps differ by image content;
    a batch drawn from many corruptions adds the corruptions' differences (noise against blur, ...).
    UnMix-TNS keys its number of components on this (K = 128 for mixed domains); here it is read off the
    stream (buffers: state)."""

    def __init__(self, rho: float, threshold: float) -> None:
        super().__init__()
        self.rho, self.threshold = float(rho), float(threshold)
        self.register_buffer("score", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    @property
    def mixed(self) -> bool:
        return int(self.seen) > 0 and float(self.score) > self.threshold

    @torch.no_grad()
    def update(self, spread: torch.Tensor | None) -> None:
        if spread is None:
            return
        was = self.mixed
        _fold_(self.score, spread, self.rho, int(self.seen) == 0)
        self.seen += 1
        if self.mixed != was:
            log.info("regime-aware: after batch %d (average style spread %.3f) the batches look %s", int(self.seen),
                     float(self.score), "domain-mixed" if self.mixed else "single-domain")

    def extra_repr(self) -> str:
        return f"rho={self.rho}, threshold={self.threshold}"


class RegimeStepState(StepState):
    """ETA's moving average and counters (extra state) plus the two detectors (buffers)."""

    def __init__(self, detector: RegimeDetector, mixing: MixingDetector) -> None:
        super().__init__(ETAState(), "regime-aware")
        self.detector = detector
        self.mixing = mixing


def _regime_step(opts: Resolved):
    eta_kw = {"d_margin": opts["d_margin"], "margin_factor": opts["margin_factor"]}
    lame_kw = {"affinity_kind": opts["affinity"], "knn": opts["knn"], "force_symmetry": opts["force_symmetry"]}
    seen, grad_cap = opts["detector_images"], opts["grad_images"]

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        branches, memory = adapter.model, adapter.memory
        detector = memory.detector
        mixed = memory.mixing.mixed
        unmix = branches.unmix_branch(mixed)
        if bool(detector.correlated):
            branches.set_component_rate(unmix, 1.0)
            with torch.no_grad():
                features, logits_c = features_and_logits(unmix, x)
                out = lame(logits_c, features, **lame_kw)
        else:
            n = x.shape[0]
            m = min(n, seen)
            # the detector's share of the batch: evenly spaced images; in lam they count as the whole batch,
            # so the components follow the stream at UnMix-TNS's pace per image
            branches.set_component_rate(unmix, n / m)
            with torch.no_grad():
                logits_c = unmix(x if m == n else x[_spaced(n, m)])
            g = min(n, grad_cap)
            if g == n:
                result = eta_step(branches.iid, x, adapter.optimizer, memory.state, **eta_kw)
                logits = result.logits
            else:
                # a larger batch is predicted whole, then ETA steps on g evenly spaced images of it: the step's
                # autograd graph (its memory) stays that of a batch of g
                with torch.no_grad():
                    logits = branches.iid(x)
                result = eta_step(branches.iid, x[_spaced(n, g)], adapter.optimizer, memory.state, **eta_kw)
            memory.record_collapse(result.collapsed)
            out = logits.softmax(1)
        detector.update(logits_c.argmax(1), mixed)
        memory.mixing.update(branches.style_spread(unmix))
        return out

    return step


def unsupported_reason(model: nn.Module) -> str | None:
    """Why ``regime-aware`` cannot run on ``model``, or None: it needs BatchNorm layers (its branches replace their
    statistics) and a final ``nn.Linear`` (LAME reads its input, the detector its number of classes)."""
    if not batchnorm_layers(model):
        return "the model has no BatchNorm layers, whose statistics its branches replace"
    try:
        classifier_layer(model, "regime-aware")
    except TTAError:
        return "the model has no final nn.Linear classifier, whose input LAME reads"
    return None


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
        Option("unmix_init", str, "random", "initial components of the correlated branch's UnMix-TNS: random (the "
               "paper's Gaussian draw; the detector's thresholds were read off this branch's predictions) or "
               "stratified (normal quantiles, the source moments matched exactly, the seed only orders them; "
               "tta.methods.unmix_tns)", choices=("random", "stratified")),
        Option("affinity", str, DEFAULT_AFFINITY, "LAME feature affinity", choices=AFFINITIES),
        Option("knn", int, DEFAULT_KNN, "LAME neighbours", low=1),
        Option("force_symmetry", bool, False, "LAME: symmetrize the affinity"),
        Option("detector_images", int, DETECTOR_IMAGES, "in the i.i.d. regime the correlated branch (the "
               "detectors' and its components' only input there) sees this many evenly spaced images of each batch "
               "(all of a smaller batch)", low=2),
        Option("grad_images", int, GRAD_IMAGES, "in the i.i.d. regime ETA's step (its forward with gradients and "
               "backward) sees at most this many evenly spaced images of a batch; a larger batch is first "
               "predicted whole without gradients, so the step's memory does not grow with the batch", low=2),
        Option("rho", float, RHO, "detectors: weight of the newest batch in the moving averages of the "
               "correlation score and the style spread", low=0, open_low=True, high=1),
        Option("enter", float, ENTER, "detector: switch to the correlated regime when the average excess pair "
               "agreement (over the recent batches') exceeds this", low=-1, high=1),
        Option("leave", float, LEAVE, "detector: switch back to the i.i.d. regime when it falls below this "
               "(<= enter)", low=-1, high=1),
        Option("history", float, HISTORY, "detector: weight of the newest batch in the recent batches' predicted-"
               "class frequencies", low=0, open_low=True, high=1),
        Option("warmup", int, WARMUP, "detector: batches before the first switch (the UnMix-TNS components start "
               "at the source statistics and need a few batches to reach the domain)", low=0),
        Option("start", str, "iid", "regime assumed before the first batch", choices=("iid", "correlated")),
        Option("mixed_spread", float, MIXED_SPREAD, "domain-mixing detector: the batches count as mixing domains "
               "while the moving average of their style spread exceeds this", low=0),
        Option("mixed_K", int, MIXED_K, "components of the mixed branch's UnMix-TNS, which replaces the correlated "
               "branch while the batches mix domains (UnMix-TNS's own K for mixed domains; its other options are "
               "the correlated branch's)", low=1),
        Option("mixed_init", str, "stratified", "initial components of the mixed branch: stratified (its error on "
               "mixed domains then barely moves with the seed) or random (the paper's draw)",
               choices=("random", "stratified")),
        Option("mixed_enter", float, MIXED_ENTER, "detector: the threshold to the correlated regime while the "
               "batches mix domains (on the plain pair agreement)", low=0, high=1),
        Option("mixed_leave", float, MIXED_LEAVE, "detector: the threshold back to i.i.d. while the batches mix "
               "domains (<= mixed_enter)", low=0, high=1),
    ),
    defaults=tuple(r for r in ETA_DEFAULTS if "stats" not in r.values),
    notes="needs a BatchNorm model ending in nn.Linear; three model copies; min batch 2",
    min_batch_size=2,
)
def regime_aware(model: nn.Module, opts: Resolved) -> Adapter:
    if not batchnorm_layers(model):
        raise TTAError("method 'regime-aware' needs a model with BatchNorm layers (its branches replace their "
                       "statistics); use 'eta' or 'lame' for other models")
    classifier = classifier_layer(model, "regime-aware")  # fail at construction, not at the first batch
    correlated, mixed = copy.deepcopy(model), copy.deepcopy(model)
    policy = get_stats(opts["stats"], "regime-aware")
    # the K = 16 branch draws its components first, as when it was the only one
    policy.swap(correlated, {**opts["stats_options"], "init": opts["unmix_init"]})
    policy.swap(mixed, {**opts["stats_options"], "init": opts["mixed_init"], "K": opts["mixed_K"]})
    correlated.requires_grad_(False)
    mixed.requires_grad_(False)
    iid = model
    get_stats("tbn", "regime-aware").swap(iid, {"prior": 0.0})
    iid.requires_grad_(False)
    params = norm_parameters(iid)
    for p in params:
        p.requires_grad_(True)
    detector = RegimeDetector(opts["rho"], opts["enter"], opts["leave"], opts["warmup"], opts["start"] == "correlated",
                              num_classes=classifier.out_features,
                              history=opts["history"], mixed_enter=opts["mixed_enter"], mixed_leave=opts["mixed_leave"])
    mixing = MixingDetector(opts["rho"], opts["mixed_spread"])
    adapter = opts.adapter(
        RegimeBranches(iid, correlated, mixed), optimizer=make_optimizer(params, opts), step=_regime_step(opts),
        memory=RegimeStepState(detector, mixing), needs_grad=True, min_batch_size=2,
        min_batch_reason="the i.i.d. branch normalizes with the statistics of the batch",
    )
    adapter.output = "probabilities"
    return adapter


__all__: list[Any] = ["MixingDetector", "RegimeDetector", "pair_agreement", "regime_aware", "unsupported_reason"]
