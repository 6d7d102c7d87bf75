"""``cotta``: continual test-time adaptation (Wang, Fink, Van Gool, Dai, CVPR 2022; qinenergy/cotta).

Recipe: a statistics policy (default ``tbn``, batch statistics) + every weight and bias
of the student (convolutions, linear and norm layers) + an EMA teacher and a frozen anchor,
both copies of the swapped student + the one-step function
``tta.methods.cotta_step.cotta_step``: the teacher averages 32 augmented views when the
anchor's confidence is below ``ap``, the student learns the teacher's soft labels, the
teacher follows the student (EMA ``mt``) and each student weight entry returns to its
source value with probability ``rst``. The prediction is the teacher's, before the update.
Augmentations and restore masks come from the adapter's generator (``seed``, the run's
seed by default). ``views_per_call`` views share one teacher forward, each with its own
batch statistics (``tta.methods.view_forward``); by default one per call on CPU (measured
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
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .adapter import Adapter
from .cotta_step import CoTTAHyper, CoTTAModels, cotta_step
from .gradient import UNMIX_PROTOCOL, gradient_adapter, optimizer_options, stats_options
from .options import Option, when
from .registry import Resolved, register_method
from .step_state import StepState

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
        when(batchnorm=False)(stats="none"),
        *UNMIX_PROTOCOL,
    ),
    notes="stats=unmix-tns is UnMix-TNS + CoTTA (own components per model, K=128 on mixed domains, protocol lr)",
)
def cotta(model: nn.Module, opts: Resolved) -> Adapter:
    views_per_call = opts["views_per_call"] if opts["stats"] in STATELESS_STATS else 1
    hyper = CoTTAHyper(mt=opts["mt"], rst=opts["rst"], ap=opts["ap"], n_augmentations=opts["n_augmentations"],
                       symmetric=opts["symmetric"], views_per_call=views_per_call)

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        anchor = adapter.memory.anchor
        models = CoTTAModels(adapter.model, adapter.teacher, anchor, dict(anchor.named_parameters()))
        out = cotta_step(models, adapter.optimizer, x, adapter.generator, hyper)
        adapter.memory.record_collapse(out.collapsed)
        return out.logits

    return gradient_adapter(model, opts, None, step=step, memory=CoTTAAnchor, teacher=copy.deepcopy,
                            seed=opts["seed"], params=lambda m: list(m.parameters()))
