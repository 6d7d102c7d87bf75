"""SAR (Niu et al., ICLR 2023): sharpness-aware, reliable entropy minimization, one step.

Reference: mr-eggplant/SAR ``sar.py``/``sam.py``/``main.py``; mariodoebler/test-time-adaptation
(below "mdb") ``methods/sar.py``. Per batch (docs/methods.md, "Entropy-filtering methods"):

1. z = f(x); e = H(z); S1 = {e < E0}, E0 = 0.4 ln C; backward of mean_{S1} e.
2. SAM first step: θ ← θ + ρ g/‖g‖ (ρ = 0.05).
3. e' = H(f_{θ+ε}(x)) on the full batch; S2 = S1 ∩ {e' < E0}; backward of mean_{S2} e'.
4. The moving average ema ← 0.9 ema + 0.1 mean_{S2} e' (only when S2 is non-empty).
5. SAM second step: back to θ, base SGD step (momentum 0.9, not nesterov).
6. Model recovery: if ema < e_m = 0.2, the model is restored (``restore``) and ema cleared.
7. The step-1 logits are the prediction.

Two reference quirks, and what this module does:

* The reference resets by reloading its SAM's state_dict, which does not hold the base
  SGD's momentum buffers, so momentum *survives* the reset (mdb shares this). ``restore``
  must therefore restore the model only; ``optimizer`` keeps its state, as in both codes.
* The reference re-assigns the old ema right after the reset (a line-order slip its
  maintainer confirmed), so ema stays below e_m and the model is reset again on the next
  steps. We clear ema, as intended and as mdb does; ``keep_ema_after_reset=True`` gives the
  reference's numbers exactly.

Empty S1/S2 are not skipped (as in the reference): the gradients are zero, and SGD
momentum still moves the parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..errors import TTAError
from ..optim.sam import SAM
from .entropy_filters import all_finite, entropy_margin, masked_mean, softmax_entropy
from .step_result import StepResult

MARGIN_FACTOR = 0.4  # E0 = 0.4 ln C (SAR main.py sar_margin_e0, mdb EATA.MARGIN_E0)
RESET_EM = 0.2  # e_m, the model-recovery threshold (hard-coded 0.2 in SAR sar.py)
RHO = 0.05  # SAM radius (SAR main.py)
EMA_DECAY = 0.9  # SAR sar.py update_ema

#: top-level modules SAR and DeYO leave frozen: ResNet layer4 and ViT-B blocks 9-11 and final norm
SKIPPED_NAME_PARTS = ("layer4", "blocks.9", "blocks.10", "blocks.11", "norm.")
SKIPPED_NAMES = ("norm",)

#: optimizer defaults: mdb cfgs/{cifar10_c,cifar100_c}/sar.yaml (SGD under SAM, batch 200);
#: ImageNet: SAR main.py (batch 64), see ``sar_lr`` for other batch sizes
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"optimizer": "sam-sgd", "lr": 1e-3, "momentum": 0.9, "rho": RHO, "batch_size": 200},
    "cifar100": {"optimizer": "sam-sgd", "lr": 1e-3, "momentum": 0.9, "rho": RHO, "batch_size": 200},
    "imagenet": {"optimizer": "sam-sgd", "lr": 2.5e-4, "momentum": 0.9, "rho": RHO, "batch_size": 64},
}


def _official_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm))


def sar_parameters(
    model: nn.Module, is_norm: Callable[[nn.Module], bool] | None = None
) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the weight/bias of every norm layer SAR adapts.

    The reference adapts BatchNorm2d/LayerNorm/GroupNorm affine parameters except in modules
    whose name contains ``layer4``, ``blocks.9``-``blocks.11`` or ``norm.`` or equals ``norm``
    (so a CIFAR ResNet/WRN adapts every BatchNorm). Pass ``is_norm`` when the norm layers
    have been swapped for other classes.
    """
    is_norm = is_norm or _official_norm
    out: list[tuple[str, nn.Parameter]] = []
    for name, module in model.named_modules():
        if name in SKIPPED_NAMES or any(part in name for part in SKIPPED_NAME_PARTS) or not is_norm(module):
            continue
        for pname, p in module.named_parameters(recurse=False):
            if pname in ("weight", "bias"):
                out.append((f"{name}.{pname}" if name else pname, p))
    return out


def sar_lr(batch_size: int, dataset: str = "imagenet", *, vit: bool = False) -> float:
    """SAR's learning rate: mdb's 1e-3 on CIFAR; on ImageNet SAR main.py's batch scaling.

    ImageNet: 2.5e-4 for B >= 32, else 2.5e-4·B/32 (BN/GN ResNets); ViT: 1e-3·B/64; doubled
    at B = 1 (the reference's single-sample experiment).
    """
    if batch_size < 1:
        raise TTAError(f"SAR: batch_size must be >= 1, got {batch_size}")
    if dataset != "imagenet":
        if dataset not in DATASET_DEFAULTS:
            raise TTAError(f"SAR: no default lr for dataset {dataset!r}; "
                           f"use one of {sorted(DATASET_DEFAULTS)} or pass lr")
        return DATASET_DEFAULTS[dataset]["lr"]
    lr = 1e-3 / 64 * batch_size if vit else (2.5e-4 if batch_size >= 32 else 2.5e-4 / 64 * batch_size * 2)
    return 2 * lr if batch_size == 1 else lr


def reference_imagenet_lr(context: dict) -> float:
    """SAR's (and DeYO's) ImageNet learning rate for the run's batch size (64 when unknown)."""
    return sar_lr(context.get("run_batch_size") or 64, "imagenet")


def make_sar_optimizer(params: Iterable[nn.Parameter], lr: float, *, momentum: float = 0.9, rho: float = RHO) -> SAM:
    """SAM over SGD (momentum, no nesterov, no weight decay), as SAR main.py builds it."""
    return SAM(params, torch.optim.SGD, rho=rho, lr=lr, momentum=momentum)


@dataclass
class SARState:
    """What SAR carries across batches besides parameters and optimizer: the loss moving average."""

    ema: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema = None if state["ema"] is None else float(state["ema"])


def sar_step(
    model: nn.Module,
    x: torch.Tensor,
    optimizer: SAM,
    state: SARState,
    *,
    restore: Callable[[], None],
    margin_factor: float = MARGIN_FACTOR,
    reset_threshold: float = RESET_EM,
    ema_decay: float = EMA_DECAY,
    keep_ema_after_reset: bool = False,
) -> StepResult:
    """One SAR step on batch ``x``; returns the first-forward logits.

    ``model`` must already use batch statistics and have only SAR's parameters in
    ``optimizer`` (see ``sar_parameters``). ``restore()`` is called when the model recovery
    fires; it must restore the model's initial state (not the optimizer's, see the module
    docstring). Works at B = 1 (batch statistics over one image's pixels).
    """
    if not isinstance(optimizer, SAM):
        raise TTAError("SAR needs a SAM optimizer for its two-pass update; "
                       "build it with make_sar_optimizer(params, lr)")
    with torch.enable_grad():
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        if not all_finite(logits):
            return StepResult(logits.detach(), collapsed=True)
        e0 = entropy_margin(logits.shape[1], margin_factor)
        ent = softmax_entropy(logits)
        mask1 = ent < e0
        loss1 = masked_mean(ent, mask1)
        loss1.backward()
        optimizer.first_step(zero_grad=True)

        ent2 = softmax_entropy(model(x))
        mask2 = mask1 & (ent2 < e0)
        loss2 = masked_mean(ent2, mask2)
        if not all_finite(ent2, loss2):
            optimizer.undo_first_step()
            return StepResult(logits.detach(), collapsed=True, stats={"selected_1": int(mask1.sum())})
        loss2.backward()
        optimizer.second_step(zero_grad=True)

    n1, n2 = int(mask1.sum()), int(mask2.sum())
    loss_value = float(loss2.detach()) if n2 > 0 else float("nan")
    if n2 > 0:
        state.ema = loss_value if state.ema is None else ema_decay * state.ema + (1 - ema_decay) * loss_value
    reset = state.ema is not None and state.ema < reset_threshold
    if reset:
        restore()
        if not keep_ema_after_reset:
            state.ema = None
    return StepResult(
        logits.detach(), updated=True, reset=reset, loss=loss_value,
        stats={"selected_1": n1, "selected_2": n2, "mask_1": mask1, "mask_2": mask2,
               "ema": float("nan") if state.ema is None else state.ema},
    )
