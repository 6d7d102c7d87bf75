"""``roid``: robust online test-time adaptation (Marsden, Döbler, Yang, WACV 2024;
mariodoebler/test-time-adaptation ``methods/roid.py``).

Recipe: a statistics policy (default ``tbn``, batch statistics) + the norm affine
parameters + the one-step function ``tta.methods.roid.roid_step``: diversity- and
certainty-weighted soft likelihood ratio plus a consistency loss on one augmented copy of
the kept samples, weight ensembling with the source parameters (0.99 / 0.01) and the
prediction, the pre-update logits times the smoothed batch prior. The augmentation draws
come from the adapter's generator (``seed``, the run's seed by default).

With ``stats="unmix-tns"`` this is UnMix-TNS + ROID as in devavratTomar/unmixtns: the UnMix
layers replace BatchNorm before the method is built, their affine parameters are adapted
and ensembled, both forwards of a batch (test batch and augmented kept subset) update the
components, the UnMix-TNS defaults for the shift apply (K = 128 on mixed domains) and the
protocol's learning rate (Adam 1e-5 on CIFAR, SGD nesterov 2.5e-6 on ImageNet).

Defaults: CIFAR Adam 1e-3; ImageNet SGD nesterov 2.5e-4 (``cfgs/*/roid.yaml``); the loss
is divided by ``loss_batch_size`` (the reference's configured batch size; None: the
current batch's size, which equals the reference except for a smaller last batch).
State across batches: parameters, optimizer, the class-probability average (buffer of
``adapter.memory``); the source parameters are a constant copy there.

The step (``roid_step``) and its parts.

The official code is mariodoebler/test-time-adaptation ``methods/roid.py`` with
``utils/losses.py``; docs/methods.md lists the defaults and the choices below.

Trainable: the affine weight and bias of the normalization layers; BatchNorm2d uses
batch statistics; the model stays in eval mode. One step on a batch x of B samples:

1. z = f(x), p = softmax(z).
2. Weights (no gradient): diversity d_i = 1 - cos(pi_bar, p_i), certainty c_i = -H(z_i),
   both min-max normalized over the batch; w_i = exp(d_i c_i / T); samples with
   d_i < mean(d) get weight 0 and are dropped. pi_bar <- 0.9 pi_bar + 0.1 mean_b p_b.
3. Loss = sum over kept i of w_i SLR(z_i) / B_cfg, SLR(z) = -sum_c q_c log(q_c / (1 - q_c) + 1e-5)
   with q = clamp(p, 0, 0.99); plus sum over kept i of w_i SCE(f(A(x_i)), z_i) / B_cfg
   with one augmentation draw A for the kept subset. z is not detached.
   B_cfg is the configured batch size, not the current batch's.
4. backward, step, zero_grad; then weight ensembling theta <- 0.99 theta + 0.01 theta_source.
5. Return z (pre-update) multiplied class-wise by the smoothed batch prior
   (pi + s) / (1 + s C), pi = mean_b p_b, s = max(1/B, 1/C) / max_c pi_c.

A batch of one cannot be weighted (the min-max normalization is 0/0 and the official
code turns every trained parameter into NaN), so it raises an error. A batch whose
weights or loss are non-finite for another reason (e.g. all samples identical) skips the
update and reports ``collapsed``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ._adapter import Adapter
from ._entropy import softmax_entropy
from ._gradient import NO_BATCHNORM, UNMIX_PROTOCOL, gradient_adapter, is_norm_layer, optimizer_options, stats_options
from ._model_parts import num_classes, weight_bias_parameters
from ._options import Option, when
from ._recipe import register_method, Resolved
from ._step_output import register_tensors, registered_tensors, StepResult, StepState
from ._view_augment import ROID_AUGMENT, augment_views, AugmentConfig, sample_view_params


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoidHyper:
    """The step's hyperparameters, as resolved from the ``roid`` options (``from_options``)."""

    use_weighting: bool
    use_prior_correction: bool
    use_consistency: bool
    momentum_src: float
    momentum_probs: float
    temperature: float
    augment: AugmentConfig = ROID_AUGMENT  # the official tta_transform; not an option

    @classmethod
    def from_options(cls, opts: Resolved) -> "RoidHyper":
        return cls(use_weighting=opts["use_weighting"], use_prior_correction=opts["use_prior_correction"],
                   use_consistency=opts["use_consistency"], momentum_src=opts["momentum_src"],
                   momentum_probs=opts["momentum_probs"], temperature=opts["temperature"])


def roid_parameters(model: nn.Module, norm_types: tuple[type[nn.Module], ...]) -> list[tuple[str, nn.Parameter]]:
    """The trainable weight/bias of the norm layers (``collect_params``)."""
    return weight_bias_parameters(model, tuple(norm_types))


@dataclass
class RoidState:
    """What ROID carries across batches besides the model and optimizer.

    ``class_probs`` is the moving average pi_bar (reset: uniform); ``source`` holds the
    initial values of the trainable parameters, the ensembling target (never changes).
    """

    class_probs: torch.Tensor
    source: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: nn.Module, num_classes: int, norm_types: tuple[type[nn.Module], ...]) -> "RoidState":
        source = {n: p.detach().clone() for n, p in roid_parameters(model, norm_types)}
        device = next(iter(source.values())).device if source else torch.device("cpu")
        return cls(torch.full((num_classes,), 1.0 / num_classes, device=device), source)

    def reset(self) -> None:
        self.class_probs.fill_(1.0 / self.class_probs.numel())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"class_probs": self.class_probs.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.class_probs.copy_(state["class_probs"])


def soft_likelihood_ratio(logits: torch.Tensor, clip: float = 0.99, eps: float = 1e-5) -> torch.Tensor:
    """Per-sample SLR loss; the gradient flows through the clamped probabilities."""
    q = logits.softmax(1).clamp(0.0, clip)
    return -(q * torch.log(q / (1.0 - q) + eps)).sum(1)


def symmetric_cross_entropy(x: torch.Tensor, target: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Per-sample SCE(x, target) = -(1-a) sum softmax(target) log_softmax(x) - a sum softmax(x) log_softmax(target)."""
    return (-(1 - alpha) * (target.softmax(1) * x.log_softmax(1)).sum(1)
            - alpha * (x.softmax(1) * target.log_softmax(1)).sum(1))


def _minmax(v: torch.Tensor) -> torch.Tensor:
    return (v - v.min()) / (v.max() - v.min())


@torch.no_grad()
def roid_weights(logits: torch.Tensor, class_probs: torch.Tensor, temperature: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, dropped): diversity x certainty weights, 0 where ``dropped``."""
    probs = logits.softmax(1)
    div = _minmax(1.0 - F.cosine_similarity(class_probs.unsqueeze(0), probs, dim=1))
    dropped = div < div.mean()
    cert = _minmax(-softmax_entropy(logits))
    weights = torch.exp(div * cert / temperature)
    weights[dropped] = 0.0
    return weights, dropped


@torch.no_grad()
def prior_correction(logits: torch.Tensor) -> torch.Tensor:
    """Logits times the smoothed batch prior (pi + s) / (1 + s C)."""
    b, c = logits.shape
    prior = logits.softmax(1).mean(0)
    smooth = max(1.0 / b, 1.0 / c) / prior.max()
    return logits * ((prior + smooth) / (1.0 + smooth * c))


@torch.no_grad()
def weight_ensemble_(params: list[tuple[str, nn.Parameter]], source: dict[str, torch.Tensor],
                     momentum: float) -> None:
    """theta <- momentum * theta + (1 - momentum) * theta_source, for the trainable parameters."""
    if momentum >= 1.0:
        return
    for name, p in params:
        p.copy_(momentum * p + (1.0 - momentum) * source[name].to(p))


def roid_step(model: nn.Module, optimizer: torch.optim.Optimizer, state: RoidState, x: torch.Tensor,
              generator: torch.Generator | None, hyper: RoidHyper, *, batch_size: int | None,
              norm_types: tuple[type[nn.Module], ...], augmented: torch.Tensor | None = None) -> StepResult:
    """One ROID step on ``x`` (B, C, H, W) in [0, 1]; returns the prior-corrected pre-update logits.

    ``diagnostics["kept"]``: the samples with non-zero weight. ``collapsed``: non-finite logits,
    weights or loss, no update made (the logits are then not prior-corrected).

    ``batch_size`` is the configured batch size that divides the loss (official
    ``cfg.TEST.BATCH_SIZE``; None: this batch's size). ``augmented`` replaces the
    drawn augmentation of the kept samples (tests inject it); it must have one row per
    kept sample.
    """
    b = x.shape[0]
    if b < 2 and hyper.use_weighting:
        raise InputError("roid needs at least 2 samples per batch: its diversity and certainty weights are "
                         "min-max normalized over the batch (0/0 for one sample); use a larger batch "
                         "(default 200 on CIFAR, 64 on ImageNet) or a method that adapts on single samples")
    denom = float(batch_size if batch_size is not None else b)
    with torch.enable_grad():
        z = model(x)
        if not bool(torch.isfinite(z).all()):
            return _skip(optimizer, z, "non-finite logits")
        if hyper.use_weighting:
            weights, dropped = roid_weights(z, state.class_probs, hyper.temperature)
            if not bool(torch.isfinite(weights).all()):
                return _skip(optimizer, z, "non-finite sample weights (all samples alike?)")
            with torch.no_grad():
                state.class_probs.mul_(hyper.momentum_probs).add_(z.softmax(1).mean(0), alpha=1 - hyper.momentum_probs)
        else:
            weights, dropped = torch.ones(b, device=z.device), torch.zeros(b, dtype=torch.bool, device=z.device)
        kept = ~dropped
        loss = (soft_likelihood_ratio(z) * weights)[kept].sum() / denom
        if hyper.use_consistency:
            if augmented is None:
                params = sample_view_params(1, x.shape[-1], hyper.augment, generator)
                augmented = augment_views(x[kept], params, hyper.augment, generator=generator)
            z_aug = model(augmented)
            loss = loss + (symmetric_cross_entropy(z_aug, z[kept]) * weights[kept]).sum() / denom
    if not bool(torch.isfinite(loss)):
        return _skip(optimizer, z, "non-finite loss")
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    weight_ensemble_(roid_parameters(model, norm_types), state.source, hyper.momentum_src)
    out = z.detach()
    if hyper.use_prior_correction:
        out = prior_correction(out)
    return StepResult(out, updated=True, loss=float(loss.detach()), diagnostics={"kept": int(kept.sum())})


def _skip(optimizer: torch.optim.Optimizer, z: torch.Tensor, why: str) -> StepResult:
    log.warning("roid: %s; skipping this batch's update", why)
    optimizer.zero_grad(set_to_none=True)
    return StepResult(z.detach(), collapsed=True, diagnostics={"kept": 0})


ONE_SAMPLE = "its weights are min-max normalized over the batch, 0/0 for one image; use eta, sar or deyo"


def norm_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The classes of the model's normalization layers (after the statistics policy's swap)."""
    return tuple(dict.fromkeys(type(m) for m in model.modules() if is_norm_layer(m)))


class RoidStepState(StepState):
    """ROID's class-probability moving average (a buffer) and the source parameters (constant)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__(None, "roid")
        self.types = norm_types(student)
        state = RoidState.from_model(student, num_classes(student, "roid"), self.types)
        self.names = list(state.source)
        self.register_buffer("class_probs", state.class_probs)
        register_tensors(self, "source", list(state.source.values()))

    def roid_state(self) -> RoidState:
        return RoidState(self.class_probs, dict(zip(self.names, registered_tensors(self, "source", len(self.names)))))


@register_method(
    "roid",
    summary="ROID: weighted soft-likelihood-ratio + consistency, weight ensembling, prior-corrected output",
    paper="Marsden, Döbler, Yang, WACV 2024; mariodoebler/test-time-adaptation",
    options=(
        *stats_options("tbn"),
        Option("use_weighting", bool, True, "diversity x certainty sample weights"),
        Option("use_prior_correction", bool, True, "multiply the output by the smoothed batch prior"),
        Option("use_consistency", bool, True, "consistency loss on an augmented copy"),
        Option("momentum_src", float, 0.99, "weight ensembling: θ <- m θ + (1-m) θ_source", low=0, high=1),
        Option("momentum_probs", float, 0.9, "moving average of the class probabilities", low=0, high=1),
        Option("temperature", float, 1 / 3, "temperature of the sample weights", low=0, open_low=True),
        Option("loss_batch_size", int, None, "divides the loss (None: the batch's size)", low=1, nullable=True),
        Option("seed", int, 0, "seed of the augmentation draws", low=0, from_context="run_seed"),
        *optimizer_options("adam", 1e-3),
    ),
    defaults=(
        when(dataset="imagenet")(optimizer="sgd", lr=2.5e-4, momentum=0.9, nesterov=True),
        NO_BATCHNORM,
        *UNMIX_PROTOCOL,
    ),
    notes="stats=unmix-tns is UnMix-TNS + ROID (K=128 on mixed domains, protocol lr)",
    min_batch_size=2,
)
def roid(model: nn.Module, opts: Resolved) -> Adapter:
    hyper = RoidHyper.from_options(opts)

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        memory = adapter.memory
        out = roid_step(adapter.model, adapter.optimizer, memory.roid_state(), x, adapter.generator, hyper,
                        batch_size=opts["loss_batch_size"], norm_types=memory.types)
        memory.record_collapse(out.collapsed)
        return out.logits

    return gradient_adapter(model, opts, None, step=step, memory=RoidStepState, seed=opts["seed"],
                            min_batch_size=2 if opts["use_weighting"] else 1, min_batch_reason=ONE_SAMPLE)


__all__ = ["roid"]
