"""``sar``: sharpness-aware, reliable entropy minimization (Niu et al., ICLR 2023; mr-eggplant/SAR).

Recipe: a statistics policy (default ``tbn``: pure batch statistics, as SAR's BatchNorm
without running statistics) + SAR's parameters (norm affine outside ``layer4`` and ViT
blocks 9-11, so every BatchNorm of a CIFAR ResNet) + SAM over SGD (momentum 0.9, not
nesterov) + the one-step function ``tta.methods.sar_step.sar_step``: the reliable-entropy
filter, the two SAM passes, the loss moving average and the model recovery (the model
reloads its initial state when the average falls below 0.2; SGD momentum survives, as in
the reference). The prediction is the first forward's logits, before the update.

Defaults: CIFAR lr 1e-3 (mariodoebler/test-time-adaptation ``cfgs/cifar10_c/sar.yaml``,
which builds SAM(SGD) whatever its optimizer setting); ImageNet SAR ``main.py``'s rule for the
run's batch size B: 2.5e-4 at B >= 32, else 2.5e-4·B/32 (so 1.25e-4 at tta's ImageNet-C batch
of 16; ``tta.methods.sar_step.sar_lr``). ``tta.adapt`` without ``run_batch_size=`` takes B = 64. State across batches: the parameters, SGD momentum and the moving average
(``adapter.memory.state``). GroupNorm/LayerNorm models keep their norms (stats="none") and
adapt their affine parameters, as SAR does for ResNet-50-GN and ViT.
"""
from __future__ import annotations

import torch
from torch import nn

from .adapter import Adapter
from .gradient import NO_BATCHNORM, gradient_adapter, is_norm_layer, stats_options
from .options import Derived, Option, when
from .registry import Resolved, register_method
from .sar_step import (MARGIN_FACTOR, RESET_EM, RHO, SARState, make_sar_optimizer, reference_imagenet_lr,
                       sar_parameters, sar_step)
from .step_state import StepState


#: SAR main.py: 2.5e-4 at batch >= 32, else scaled down with the batch
IMAGENET_LR = Derived(reference_imagenet_lr, "2.5e-4 at batch >= 32, else 2.5e-4*B/32 (SAR main.py)")


@register_method(
    "sar",
    summary="SAR: SAM entropy minimization of confident samples, with model recovery (pre-update logits)",
    paper="Niu et al., ICLR 2023; mr-eggplant/SAR",
    options=(
        *stats_options("tbn"),
        Option("lr", float, 1e-3, "learning rate of the SGD under SAM", low=0, open_low=True),
        Option("momentum", float, 0.9, "SGD momentum (not nesterov)", low=0, high=1, open_high=True),
        Option("rho", float, RHO, "SAM radius", low=0),
        Option("margin_factor", float, MARGIN_FACTOR, "entropy filter E0 = margin_factor * ln C", low=0,
               open_low=True),
        Option("reset_threshold", float, RESET_EM, "model recovery when the loss average falls below", low=0),
        Option("keep_ema_after_reset", bool, False, "the reference's line order: keep the old average after a reset"),
    ),
    defaults=(when(dataset="imagenet")(lr=IMAGENET_LR), NO_BATCHNORM),
    notes="stats=<statistics policy> composes; GN/LN-only models adapt their own norm affine",
)
def sar(model: nn.Module, opts: Resolved) -> Adapter:
    kw = {"margin_factor": opts["margin_factor"], "reset_threshold": opts["reset_threshold"],
          "keep_ema_after_reset": opts["keep_ema_after_reset"]}

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        result = sar_step(adapter.model, x, adapter.optimizer, adapter.memory.state,
                          restore=lambda: adapter.restore("model"), **kw)
        adapter.memory.record_collapse(result.collapsed)
        return result.logits

    return gradient_adapter(
        model, opts, None, step=step, memory=StepState(SARState(), "sar"),
        params=lambda m: [p for _, p in sar_parameters(m, is_norm=is_norm_layer)],
        optimizer=lambda params, o: make_sar_optimizer(params, o["lr"], momentum=o["momentum"], rho=o["rho"]),
    )
