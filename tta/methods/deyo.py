"""``deyo``: destroy-your-object entropy minimization (Lee et al., ICLR 2024; Jhyun17/DeYO).

Recipe: a statistics policy (default ``tbn``, batch statistics) + SAR's parameter set + the
one-step function ``tta.methods.deyo_step.deyo_step``: entropy filter τ = 0.5 ln C, the
patch-shuffled copies of the confident images, the PLPD filter and the reweighted entropy
loss. The prediction is the pre-update logits. The patch permutations come from the
adapter's generator, seeded by ``seed`` (the run's seed by default), so a run is
reproducible and the generator state is saved with the adapter.

Defaults: CIFAR Adam 1e-3, τ_PLPD 0.2 (mariodoebler/test-time-adaptation ``cfgs/*/deyo.yaml``);
ImageNet SGD momentum 0.9 without nesterov, τ_PLPD 0.3, and SAR's learning-rate rule for
the run's batch size B, 2.5e-4 at B >= 32, else 2.5e-4·B/32 (DeYO ``exp_deyo.sh``,
ResNet-50-BN). DeYO keeps no state besides the parameters and optimizer.
"""
from __future__ import annotations

import torch
from torch import nn

from .adapter import Adapter
from .deyo_step import FILTER_FACTOR, PATCH_LEN, PLPD_THRESHOLD, WEIGHT_FACTOR, deyo_step
from .gradient import NO_BATCHNORM, gradient_adapter, is_norm_layer, optimizer_options, stats_options
from .options import Option, when
from .registry import Resolved, register_method
from .sar import IMAGENET_LR
from .sar_step import sar_parameters
from .step_state import StepState


@register_method(
    "deyo",
    summary="DeYO: entropy minimization of samples whose prediction depends on object shape (PLPD filter)",
    paper="Lee, Jung, Lee, Park, Shin, Kim, ICLR 2024; Jhyun17/DeYO",
    options=(
        *stats_options("tbn"),
        Option("plpd_threshold", float, PLPD_THRESHOLD, "keep samples whose PLPD exceeds this"),
        Option("filter_factor", float, FILTER_FACTOR, "entropy filter τ = filter_factor * ln C", low=0,
               open_low=True),
        Option("weight_factor", float, WEIGHT_FACTOR, "entropy weight margin E0 = weight_factor * ln C", low=0,
               open_low=True),
        Option("aug", str, "patch", "object-destroying transform", choices=("patch", "pixel", "occ")),
        Option("patch_len", int, PATCH_LEN, "patch grid side of the patch shuffle", low=1),
        Option("reweight_ent", bool, True, "weight the loss by the entropy margin"),
        Option("reweight_plpd", bool, True, "weight the loss by exp(PLPD)"),
        Option("seed", int, 0, "seed of the patch permutations", low=0, from_context="run_seed"),
        *optimizer_options("adam", 1e-3),
    ),
    defaults=(
        when(dataset="imagenet")(optimizer="sgd", lr=IMAGENET_LR, momentum=0.9, nesterov=False, plpd_threshold=0.3),
        NO_BATCHNORM,
    ),
    notes="stats=<statistics policy> composes; GN/LN-only models adapt their own norm affine",
)
def deyo(model: nn.Module, opts: Resolved) -> Adapter:
    kw = {k: opts[k] for k in ("plpd_threshold", "filter_factor", "weight_factor", "aug", "patch_len",
                               "reweight_ent", "reweight_plpd")}

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        result = deyo_step(adapter.model, x, adapter.optimizer, generator=adapter.generator, **kw)
        adapter.memory.record_collapse(result.collapsed)
        return result.logits

    return gradient_adapter(
        model, opts, None, step=step, memory=StepState(None, "deyo"), seed=opts["seed"],
        params=lambda m: [p for _, p in sar_parameters(m, is_norm=is_norm_layer)],
    )
