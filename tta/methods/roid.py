"""``roid``: robust online test-time adaptation (Marsden, Döbler, Yang, WACV 2024;
mariodoebler/test-time-adaptation ``methods/roid.py``).

Recipe: a statistics policy (default ``tbn``, batch statistics) + the norm affine
parameters + the one-step function ``tta.methods.roid_step.roid_step``: diversity- and
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
"""
from __future__ import annotations


import torch
from torch import nn

from ..errors import TTAError
from .adapter import Adapter
from .gradient import NO_BATCHNORM, UNMIX_PROTOCOL, gradient_adapter, is_norm_layer, optimizer_options, \
    stats_options
from .options import Option, when
from .registry import Resolved, register_method
from .roid_step import RoidHyper, RoidState, roid_step
from .step_state import StepState, register_tensors, registered_tensors

ONE_SAMPLE = "its weights are min-max normalized over the batch, 0/0 for one image; use eta, sar or deyo"


def num_classes(model: nn.Module) -> int:
    """Output size of the model's last linear layer."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise TTAError("method 'roid' needs the number of classes from the model's last nn.Linear and found "
                       "none; use a classifier ending in a linear layer")
    return linear[-1].out_features


def norm_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The classes of the model's normalization layers (after the statistics policy's swap)."""
    return tuple(dict.fromkeys(type(m) for m in model.modules() if is_norm_layer(m)))


class RoidMemory(StepState):
    """ROID's class-probability moving average (a buffer) and the source parameters (constant)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__(None, "roid")
        self.types = norm_types(student)
        state = RoidState.from_model(student, num_classes(student), self.types)
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
    hyper = RoidHyper(use_weighting=opts["use_weighting"], use_prior_correction=opts["use_prior_correction"],
                      use_consistency=opts["use_consistency"], momentum_src=opts["momentum_src"],
                      momentum_probs=opts["momentum_probs"], temperature=opts["temperature"])

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        memory = adapter.memory
        out = roid_step(adapter.model, adapter.optimizer, memory.roid_state(), x, adapter.generator, hyper,
                        batch_size=opts["loss_batch_size"], norm_types=memory.types)
        memory.record_collapse(out.collapsed)
        return out.logits

    return gradient_adapter(model, opts, None, step=step, memory=RoidMemory, seed=opts["seed"],
                            min_batch_size=2 if opts["use_weighting"] else 1, min_batch_reason=ONE_SAMPLE)


__all__ = ["roid"]
