"""``cotta``: continual test-time adaptation (Wang, Fink, Van Gool, Dai, CVPR 2022; qinenergy/cotta).

Recipe: a statistics policy (default ``tbn``, batch statistics) + every weight and bias
of the student (convolutions, linear and norm layers) + an EMA teacher and a frozen anchor,
both copies of the swapped student + the one-step function
``tta.methods.cotta.cotta_step``: the teacher averages 32 augmented views when the
anchor's confidence is below ``ap``, the student learns the teacher's soft labels, the
teacher follows the student (EMA ``mt``) and each student weight entry returns to its
source value with probability ``rst``. The prediction is the teacher's, before the update.
Augmentations and restore masks come from the adapter's generator (``seed``, the run's
seed by default). ``views_per_call`` views share one teacher forward, each with its own
batch statistics (``tta.methods._view_forward``); by default one per call on CPU (measured
faster there) and all 32 in one call on an accelerator.

With ``stats="unmix-tns"`` this is UnMix-TNS + CoTTA as in devavratTomar/unmixtns: the
UnMix layers replace BatchNorm before the copies are made, so student, teacher and anchor
each keep their own components (the anchor's adapt on every batch, the teacher's on each
of the 32 views in turn, so the views run one after another there); their affine
parameters are trained, EMA'd and restored like every other weight; the UnMix-TNS defaults
for the shift apply (K = 128 on mixed domains) and the protocol's learning rate.

Defaults (qinenergy/cotta ``cifar/cfgs/*/cotta.yaml``, ``imagenet/cotta.py``): CIFAR-10 Adam
1e-3, mt 0.999, rst 0.01, ap 0.92; CIFAR-100 ap 0.72; ImageNet SGD nesterov 0.01, rst 0.001,
ap 0.1, symmetric cross-entropy. State across batches: student, teacher (with their
components), anchor (``adapter.memory.anchor``), optimizer, generator.

The step (``cotta_step``) and its parts.

Follows the official qinenergy/cotta ``cifar/cotta.py`` (and its port in
mariodoebler/test-time-adaptation ``methods/cotta.py``); docs/methods.md lists the
defaults and the choices below.

Three models: the student (every weight and bias trainable, BatchNorm on batch
statistics), an EMA teacher and a frozen anchor, both copies of the configured model,
so they normalize with batch statistics too. One step on a batch x:

1. z_s = student(x).
2. conf = mean_b max_c softmax(anchor(x)).
3. z_t = mean over 32 augmented views of teacher(A_v(x)) if conf < AP, else teacher(x).
4. loss = mean_b CE(softmax(z_t), z_s) (CIFAR) or the symmetric form (ImageNet).
5. backward, optimizer step, zero_grad.
6. teacher <- m * teacher + (1 - m) * student, every parameter.
7. stochastic restore: each student weight/bias entry returns to its source value
   with probability p (mask drawn per entry).
8. return z_t (the teacher's prediction, before this step's update).

Choices, all numerically neutral on BatchNorm CNNs without dropout:
- Models stay in eval mode with BatchNorm2d forced to batch statistics (the port's
  configuration) instead of ``model.train()``; so dropout never draws unseeded numbers.
- The 32 augmented teacher passes run only when conf < AP (the port); the official CIFAR
  script always runs them and discards them otherwise.
- On an accelerator the 32 views run as one teacher forward on a (32*B) batch whose
  BatchNorm layers compute statistics per view (``tta.methods._view_forward``), as 32
  separate calls do; on CPU one call per view measured faster and is the default.
- Every random draw (augmentation, noise, restore masks) comes from the caller's
  ``torch.Generator`` instead of the global RNG.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ._adapter import Adapter
from ._gradient import NO_BATCHNORM, UNMIX_PROTOCOL, gradient_adapter, optimizer_options, stats_options
from ._model_parts import weight_bias_parameters
from ._options import Option, when
from ._recipe import register_method, Resolved
from ._step_output import StepResult, StepState
from ._view_augment import COTTA_AUGMENT, augment_views, AugmentConfig, sample_view_params
from ._view_forward import forward_views


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoTTAHyper:
    """The step's hyperparameters, as resolved from the ``cotta`` options (``from_options``)."""

    mt: float  # teacher EMA momentum
    rst: float  # stochastic-restore probability
    ap: float  # anchor-confidence threshold below which the teacher averages views
    n_augmentations: int
    symmetric: bool  # ImageNet: symmetric cross-entropy
    views_per_call: int | None  # views per teacher forward; None: 1 on CPU, all on an accelerator
    augment: AugmentConfig = COTTA_AUGMENT  # the official transforms; not an option

    @classmethod
    def from_options(cls, opts: Resolved) -> "CoTTAHyper":
        views_per_call = opts["views_per_call"] if opts["stats"] in STATELESS_STATS else 1
        return cls(mt=opts["mt"], rst=opts["rst"], ap=opts["ap"], n_augmentations=opts["n_augmentations"],
                   symmetric=opts["symmetric"], views_per_call=views_per_call)


def cotta_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights and biases CoTTA trains and restores: every module's."""
    return weight_bias_parameters(model)


@dataclass
class CoTTAModels:
    """The models one CoTTA step works on, as the ``cotta`` adapter holds them (``of``).

    ``teacher`` changes every step; ``anchor`` and ``source`` (the student's initial
    weights, the restore target: the anchor's parameters) never change.
    """

    student: nn.Module
    teacher: nn.Module
    anchor: nn.Module
    source: dict[str, torch.Tensor]

    @classmethod
    def of(cls, adapter: Adapter) -> "CoTTAModels":
        anchor = adapter.memory.anchor
        return cls(adapter.model, adapter.teacher, anchor, dict(anchor.named_parameters()))


def cotta_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """Mean over the batch of CE(softmax(teacher), student), or its symmetric form (ImageNet)."""
    ce = -(teacher_logits.softmax(1) * student_logits.log_softmax(1)).sum(1)
    if symmetric:
        ce = 0.5 * ce - 0.5 * (student_logits.softmax(1) * teacher_logits.log_softmax(1)).sum(1)
    return ce.mean(0)


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, for every parameter."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.copy_(momentum * t + (1.0 - momentum) * s.detach())  # the official arithmetic, bit for bit


def draw_restore_masks(student: nn.Module, p: float, generator: torch.Generator | None) -> list[torch.Tensor]:
    """One Bernoulli(p) mask per trainable weight/bias, in :func:`cotta_parameters` order."""
    return [torch.rand(param.shape, generator=generator) < p for _, param in cotta_parameters(student)]


@torch.no_grad()
def stochastic_restore_(student: nn.Module, source: dict[str, torch.Tensor], masks: list[torch.Tensor]) -> None:
    """Reset the masked entries of each trainable weight/bias to its source value."""
    params = cotta_parameters(student)
    if len(params) != len(masks):
        raise ValueError(f"got {len(masks)} restore masks for {len(params)} parameters")
    for (name, param), mask in zip(params, masks):
        param.copy_(torch.where(mask.to(param.device), source[name].to(param), param))


def cotta_step(models: CoTTAModels, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               generator: torch.Generator | None, hyper: CoTTAHyper, views: torch.Tensor | None = None,
               restore_masks: list[torch.Tensor] | None = None) -> StepResult:
    """One CoTTA step on batch ``x`` (B, C, H, W) in [0, 1]; returns the teacher's prediction.

    ``diagnostics``: ``augmented`` (whether the view-averaged teacher prediction was used) and
    ``anchor_confidence``. ``collapsed``: non-finite student logits or loss, no update made.

    ``views`` (V, B, C, H, W) and ``restore_masks`` replace the drawn augmentations and
    masks (tests inject them); otherwise they come from ``generator`` (None: torch's
    global generator, which a seeded run should not rely on). A batch of one
    works (batch statistics over the image's pixels), as in the official code.
    """
    student, teacher, anchor = models.student, models.teacher, models.anchor
    with torch.enable_grad():
        z_s = student(x)
    with torch.no_grad():
        conf = float(anchor(x).softmax(1).amax(1).mean())
        augmented = conf < hyper.ap
        if augmented:
            if views is None:
                params = sample_view_params(hyper.n_augmentations, x.shape[-1], hyper.augment, generator)
                flat = augment_views(x, params, hyper.augment, generator=generator)
                views = flat.view(hyper.n_augmentations, *x.shape)
            z_t = forward_views(teacher, views, hyper.views_per_call).mean(0)
        else:
            z_t = teacher(x)
    loss = cotta_loss(z_s, z_t, hyper.symmetric)
    diagnostics = {"augmented": augmented, "anchor_confidence": conf}
    collapsed = not (bool(torch.isfinite(z_s).all()) and bool(torch.isfinite(loss)))
    if collapsed:
        log.warning("cotta: non-finite student logits or loss; skipping this batch's update")
        optimizer.zero_grad(set_to_none=True)
        return StepResult(z_t.detach(), collapsed=True, loss=float(loss.detach()), diagnostics=diagnostics)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    ema_update_(teacher, student, hyper.mt)
    if hyper.rst > 0:
        if restore_masks is None:
            restore_masks = draw_restore_masks(student, hyper.rst, generator)
        stochastic_restore_(student, models.source, restore_masks)
    return StepResult(z_t.detach(), updated=True, loss=float(loss.detach()), diagnostics=diagnostics)


#: policies whose layers keep no state across forwards, so several views can share one forward
STATELESS_STATS = ("tbn", "none", "source")


class CoTTAAnchor(StepState):
    """The frozen anchor (a copy of the swapped student); its parameters are also the restore target."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__(None, "cotta")
        self.anchor = copy.deepcopy(student).requires_grad_(False)


@register_method(
    "cotta",
    summary="CoTTA: EMA teacher with augmentation-averaged pseudo-labels, stochastic restore (teacher logits)",
    paper="Wang, Fink, Van Gool, Dai, CVPR 2022; qinenergy/cotta",
    options=(
        *stats_options("tbn"),
        Option("mt", float, 0.999, "teacher EMA momentum", low=0, high=1),
        Option("rst", float, 0.01, "stochastic-restore probability per weight entry", low=0, high=1),
        Option("ap", float, 0.92, "anchor confidence below which the teacher averages augmented views", low=0,
               high=1),
        Option("n_augmentations", int, 32, "augmented views of the teacher", low=1),
        Option("symmetric", bool, False, "symmetric cross-entropy (the ImageNet code)"),
        Option("views_per_call", int, None, "augmented views per teacher forward, each normalized with its own "
               "statistics (None: 1 on CPU, all on an accelerator; always 1 over stateful statistics)", low=1,
               nullable=True),
        Option("seed", int, 0, "seed of the augmentations and restore masks", low=0, from_context="run_seed"),
        *optimizer_options("adam", 1e-3),
    ),
    defaults=(
        when(dataset="cifar100")(ap=0.72),
        when(dataset="imagenet")(optimizer="sgd", lr=0.01, momentum=0.9, nesterov=True, rst=0.001, ap=0.1,
                                 symmetric=True),
        NO_BATCHNORM,
        *UNMIX_PROTOCOL,
    ),
    notes="stats=unmix-tns is UnMix-TNS + CoTTA (own components per model, K=128 on mixed domains, protocol lr)",
)
def cotta(model: nn.Module, opts: Resolved) -> Adapter:
    hyper = CoTTAHyper.from_options(opts)

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        out = cotta_step(CoTTAModels.of(adapter), adapter.optimizer, x, adapter.generator, hyper)
        adapter.memory.record_collapse(out.collapsed)
        return out.logits

    return gradient_adapter(model, opts, None, step=step, memory=CoTTAAnchor, teacher=copy.deepcopy,
                            seed=opts["seed"], params=lambda m: list(m.parameters()))
