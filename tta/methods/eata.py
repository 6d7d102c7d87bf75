"""``eta`` and ``eata``: efficient anti-forgetting entropy minimization (Niu et al., ICML 2022;
mr-eggplant/EATA).

Recipe: a statistics policy (default ``tbn``, batch statistics) + the norm affine
parameters + the one-step function ``tta.methods.eata.eta_step``: the reliable
(entropy < 0.4 ln C) and non-redundant (|cos(m, p)| < d_margin) filters and the
entropy-weighted loss. ``eata`` adds the Fisher regularizer α Σ F (θ − θ0)², computed once
at construction from clean source images (``source_data``: a .npy of uint8 NHWC images,
e.g. the CIFAR-10 train set; ``tta run --source-data PATH``). ``eata`` refuses to run
without them; ``eta`` is the source-free variant. The prediction is the pre-update logits.
Over a statistics policy with state (``stats="unmix-tns"``, ``tbn-ema``, ...), which the reference
never pairs with EATA, the Fisher pass leaves the statistics as they were: adaptation starts from
the same state as ``eta`` over that policy.

Defaults (docs/methods.md): CIFAR Adam 1e-3, d_margin 0.4 (CIFAR-100: 0.1), EATA α 1
(mariodoebler/test-time-adaptation ``cfgs/*/{eta,eata}.yaml``); ImageNet SGD 2.5e-4
momentum 0.9 without nesterov, d_margin 0.05, α 2000 (EATA ``main.py``); 2,000 source
images in batches of 64. The parameter set is every norm layer's affine (mdb's; the
reference adapts BatchNorm2d only, the same set on BatchNorm CNNs).

State across batches: parameters, optimizer, the moving average m and the selection
counters (``adapter.memory.state``); for EATA the Fisher and its anchor θ0 (buffers of
``adapter.memory``). ``reset()`` clears m, as mdb does (the EATA reference keeps it).

The steps (``eta_step``, ``eata_step``): efficient anti-forgetting entropy minimization.

Reference: mr-eggplant/EATA ``eata.py``/``main.py``; mariodoebler/test-time-adaptation
(below "mdb") ``methods/eata.py``. Per batch (docs/methods.md, "Entropy-filtering methods"):

1. z = f(x); e = H(z); reliable S1 = {e < E0}, E0 = 0.4 ln C.
2. Non-redundant S2 = S1 ∩ {|cos(m, softmax z)| < d_margin}, m the moving average of the
   selected probabilities (S2 = S1 while m is unset).
3. L = mean_{S2} e / exp(e - E0) (weights detached); EATA adds
   α Σ F ⊙ (θ - θ0)² with the Fisher F and anchor θ0 of ``compute_fisher``.
4. One optimizer step when S2 is non-empty; m ← 0.9 m + 0.1 mean_{S2} softmax z (m ← the
   S1 mean while unset; unchanged when nothing is selected). The pre-update logits are
   the prediction.

ETA is EATA without the Fisher term and needs no source data; EATA refuses to run without
its Fisher (``eata_step`` raises). The reference's ``reset`` does not clear m; mdb's does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pathlib import Path
from torch import nn

from ..errors import InputError, TTAError
from ._adapter import Adapter
from ._buffers import restore_buffers, snapshot_buffers
from ._entropy import all_finite, entropy_margin, masked_mean, softmax_entropy
from ._gradient import NO_BATCHNORM, gradient_adapter, norm_parameters, optimizer_options, stats_options
from ._options import Option, when
from ._recipe import register_method, Resolved
from ._step_output import register_tensors, registered_tensors, StepResult, StepState


PROBS_DECAY = 0.9  # EATA eata.py update_model_probs (not an option)


@dataclass
class FisherRegularizer:
    """EATA's anti-forgetting term α Σ F ⊙ (θ - θ0)², fixed before adaptation."""

    params: list[nn.Parameter]
    fisher: list[torch.Tensor]
    anchor: list[torch.Tensor]
    alpha: float

    def __call__(self) -> torch.Tensor:
        terms = [self.alpha * (f * (p - a).square()).sum() for p, f, a in zip(self.params, self.fisher, self.anchor)]
        return torch.stack(terms).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": list(self.fisher), "anchor": list(self.anchor), "alpha": self.alpha}

    @classmethod
    def from_state_dict(cls, params: Sequence[nn.Parameter], state: dict[str, Any]) -> FisherRegularizer:
        """Rebuild the term for ``params`` (same order as when it was computed) on resume."""
        params = list(params)
        if len(state["fisher"]) != len(params) or any(f.shape != p.shape for f, p in zip(state["fisher"], params)):
            raise TTAError("EATA: the saved Fisher does not match the adapted parameters; "
                           "recompute it with compute_fisher for this model")
        return cls(params, list(state["fisher"]), list(state["anchor"]), float(state["alpha"]))


def _source_batches(source: torch.Tensor | Iterable[torch.Tensor], num_samples: int, batch_size: int,
                    generator: torch.Generator | None) -> Iterable[torch.Tensor]:
    if not isinstance(source, torch.Tensor):
        return source
    n = source.shape[0]
    if n == 0:
        return []
    pick = torch.randperm(n, generator=generator)[:num_samples].to(source.device)  # a random subset, shuffled
    return (source[pick[i : i + batch_size]] for i in range(0, pick.numel(), batch_size))


def compute_fisher(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    source: torch.Tensor | Iterable[torch.Tensor],
    *,
    alpha: float,
    num_samples: int,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> FisherRegularizer:
    """EATA's diagonal Fisher from source images, as EATA main.py computes it.

    For each source batch: pseudo-labels ŷ = argmax f(x), loss = mean CE(f(x), ŷ), and
    F += g² with g the gradient of that *batch-mean* loss; F is divided by the number of
    batches and θ0 is θ at the end. ``model`` must be configured as for adaptation (batch
    statistics). ``source`` is either a tensor of clean source images, from which
    ``num_samples`` are drawn without replacement with ``generator`` and cut into batches
    of ``batch_size``, or an iterable of ready batches. No augmentation (the reference uses
    the test transform on clean ImageNet validation images; mdb the plain source train set).
    """
    params = list(params)
    fisher = [torch.zeros_like(p) for p in params]
    n_batches = 0
    with torch.enable_grad():
        for batch in _source_batches(source, num_samples, batch_size, generator):
            logits = model(batch)
            loss = F.cross_entropy(logits, logits.argmax(1))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for f, g in zip(fisher, grads):
                if g is not None:
                    f.add_(g.detach().square())
            n_batches += 1
    if n_batches == 0:
        raise TTAError("EATA: the source data for the Fisher regularizer is empty; pass clean source images "
                       "(the reference uses 2,000), or use ETA, the source-free variant")
    anchor = [p.detach().clone() for p in params]
    return FisherRegularizer(params, [f / n_batches for f in fisher], anchor, float(alpha))


@dataclass
class ETAState:
    """What ETA/EATA carry across batches besides parameters and optimizer."""

    probs: torch.Tensor | None = None  # moving average of selected probabilities (m)
    num_reliable: int = 0  # samples that passed the entropy filter, summed over steps
    num_selected: int = 0  # samples that also passed the redundancy filter

    def clear(self) -> None:
        """Forget m (mdb's reset and RDumb's; the EATA reference keeps m on reset)."""
        self.probs = None

    def state_dict(self) -> dict[str, Any]:
        return {"probs": self.probs, "num_reliable": self.num_reliable, "num_selected": self.num_selected}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.probs = state["probs"]
        self.num_reliable, self.num_selected = int(state["num_reliable"]), int(state["num_selected"])


def eta_step(
    model: nn.Module,
    x: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    state: ETAState,
    *,
    d_margin: float,
    margin_factor: float,
    fisher: FisherRegularizer | None = None,
    probs_decay: float = PROBS_DECAY,
) -> StepResult:
    """One ETA step (EATA when ``fisher`` is given); returns the pre-update logits.

    ``model`` must use batch statistics and ``optimizer`` hold the adapted parameters.
    Works at B = 1.
    """
    with torch.enable_grad():
        logits = model(x)
        if not all_finite(logits):
            optimizer.zero_grad(set_to_none=True)
            return StepResult(logits.detach(), collapsed=True)
        e0 = entropy_margin(logits.shape[1], margin_factor)
        ent = softmax_entropy(logits)
        probs = logits.detach().softmax(1)
        mask1 = ent < e0
        if state.probs is None:
            mask2 = mask1
        else:
            cos = F.cosine_similarity(state.probs.unsqueeze(0), probs, dim=1)
            mask2 = mask1 & (cos.abs() < d_margin)
        coeff = 1 / torch.exp(ent.detach() - e0)
        loss = masked_mean(ent * coeff, mask2)
        if fisher is not None:
            loss = loss + fisher()
        n1, n2 = int(mask1.sum()), int(mask2.sum())
        if not all_finite(loss):
            optimizer.zero_grad(set_to_none=True)
            return StepResult(logits.detach(), collapsed=True, diagnostics={"selected_1": n1, "selected_2": n2})
        if n2 > 0:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    picked = mask1 if state.probs is None else mask2
    n_picked = n1 if state.probs is None else n2
    if n_picked > 0:
        mean = torch.where(picked.unsqueeze(1), probs, torch.zeros_like(probs)).sum(0) / n_picked
        state.probs = mean if state.probs is None else probs_decay * state.probs + (1 - probs_decay) * mean
    state.num_reliable += n1
    state.num_selected += n2
    return StepResult(
        logits.detach(), updated=n2 > 0, loss=float(loss.detach()) if n2 > 0 else float("nan"),
        diagnostics={"selected_1": n1, "selected_2": n2, "mask_1": mask1, "mask_2": mask2},
    )


def eata_step(
    model: nn.Module,
    x: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    state: ETAState,
    fisher: FisherRegularizer | None,
    *,
    d_margin: float,
    margin_factor: float,
    probs_decay: float = PROBS_DECAY,
) -> StepResult:
    """One EATA step; refuses to run without the source Fisher (use ``eta_step`` then)."""
    if fisher is None:
        raise TTAError("EATA needs source data for its Fisher regularizer and none was given; pass clean source "
                       "images to compute_fisher, or use ETA, the source-free variant (eta_step)")
    return eta_step(model, x, optimizer, state, d_margin=d_margin, margin_factor=margin_factor,
                    fisher=fisher, probs_decay=probs_decay)


log = logging.getLogger(__name__)

ETA_OPTIONS = (
    *stats_options("tbn"),
    Option("d_margin", float, 0.4, "redundancy filter: drop samples with |cos(m, p)| >= d_margin", low=0),
    Option("margin_factor", float, 0.4, "entropy filter E0 = margin_factor * ln C", low=0, open_low=True),
    *optimizer_options("adam", 1e-3),
)
ETA_DEFAULTS = (
    when(dataset="cifar100")(d_margin=0.1),
    when(dataset="imagenet")(optimizer="sgd", lr=2.5e-4, momentum=0.9, nesterov=False, d_margin=0.05),
    NO_BATCHNORM,
)
NO_SOURCE = ("method 'eata' needs clean source images for its Fisher regularizer and none were given; pass "
             "source_data=PATH (a .npy of uint8 NHWC images, e.g. the CIFAR-10 train set; tta run --source-data "
             "PATH), or use 'eta', the source-free variant")


class ETAStepState(StepState):
    """ETA's moving average and counters; for EATA also the Fisher and anchor θ0 as buffers."""

    def __init__(self, method: str, fisher: FisherRegularizer | None = None) -> None:
        super().__init__(ETAState(), method)
        self.n_fisher = 0 if fisher is None else len(fisher.fisher)
        self.alpha = 0.0 if fisher is None else fisher.alpha
        if fisher is not None:
            register_tensors(self, "fisher", fisher.fisher)
            register_tensors(self, "anchor", fisher.anchor)

    def regularizer(self, params: list[nn.Parameter]) -> FisherRegularizer | None:
        if self.n_fisher == 0:
            return None
        return FisherRegularizer(params, registered_tensors(self, "fisher", self.n_fisher),
                                 registered_tensors(self, "anchor", self.n_fisher), self.alpha)


def _eta_step(opts: Resolved):
    kw = {"d_margin": opts["d_margin"], "margin_factor": opts["margin_factor"]}

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        params = adapter.optimizer.param_groups[0]["params"]
        result = eta_step(adapter.model, x, adapter.optimizer, adapter.memory.state,
                          fisher=adapter.memory.regularizer(params), **kw)
        adapter.memory.record_collapse(result.collapsed)
        return result.logits

    return step


@register_method(
    "eta",
    summary="ETA: entropy minimization of reliable, non-redundant samples, weighted by confidence (source-free EATA)",
    paper="Niu et al., ICML 2022; mr-eggplant/EATA",
    options=ETA_OPTIONS,
    defaults=ETA_DEFAULTS,
    notes="stats=<statistics policy> composes; GN/LN-only models adapt their own norm affine",
)
def eta(model: nn.Module, opts: Resolved) -> Adapter:
    return gradient_adapter(model, opts, None, step=_eta_step(opts), memory=ETAStepState("eta"))


def load_source_images(path: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random images (without replacement) of a .npy of uint8 (N, H, W, 3) images, as uint8 NCHW."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"method 'eata': source_data {path!r} is not a file; pass a .npy of uint8 NHWC images "
                         "(e.g. the CIFAR-10 train_images.npy)")
    try:
        images = np.load(file, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise InputError(f"method 'eata': cannot read source_data {path!r} as .npy ({err}); "
                         "pass a .npy of uint8 NHWC images") from err
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise InputError(f"method 'eata': source_data {path!r} holds {images.dtype} {images.shape}; "
                         "expected uint8 images of shape (N, H, W, 3)")
    pick = torch.randperm(images.shape[0], generator=generator)[:n].sort().values.numpy()
    return torch.from_numpy(np.ascontiguousarray(images[pick])).permute(0, 3, 1, 2)


@register_method(
    "eata",
    summary="EATA: ETA plus a Fisher regularizer toward the source weights (needs clean source images)",
    paper="Niu et al., ICML 2022; mr-eggplant/EATA",
    options=(
        *ETA_OPTIONS,
        Option("source_data", str, None, "a .npy of clean uint8 NHWC source images for the Fisher", nullable=True),
        Option("fisher_alpha", float, 1.0, "weight α of the Fisher regularizer", low=0),
        Option("fisher_samples", int, 2000, "source images drawn for the Fisher", low=1),
        Option("fisher_batch", int, 64, "batch size of the Fisher pass", low=1),
        Option("seed", int, 0, "seed of the source-image draw", low=0, from_context="run_seed"),
    ),
    defaults=(*ETA_DEFAULTS, when(dataset="imagenet")(fisher_alpha=2000.0)),
    notes="requires source_data (tta run --source-data PATH); eta is the source-free variant",
)
def eata(model: nn.Module, opts: Resolved) -> Adapter:
    if opts["source_data"] is None:
        raise TTAError(NO_SOURCE)
    generator = torch.Generator().manual_seed(opts["seed"])
    source = load_source_images(opts["source_data"], opts["fisher_samples"], generator)

    def memory(student: nn.Module) -> ETAStepState:
        params = norm_parameters(student)
        ref = next(iter(params))
        images = source.to(ref.device, ref.dtype).div_(255)  # in the model's precision
        # a stateful statistics policy (unmix-tns, tbn-ema, rbn, ...) would fold the source batches into its
        # statistics; the reference has none (batch statistics only), so the pass leaves every buffer as it was
        before = snapshot_buffers(student)
        fisher = compute_fisher(student, params, images, alpha=opts["fisher_alpha"],
                                num_samples=opts["fisher_samples"], batch_size=opts["fisher_batch"],
                                generator=generator)
        restore_buffers(student, before)
        log.info("eata: Fisher from %d source images of %s", source.shape[0], opts["source_data"])
        return ETAStepState("eata", fisher)

    return gradient_adapter(model, opts, None, step=_eta_step(opts), memory=memory)
