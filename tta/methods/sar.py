"""``sar``: sharpness-aware, reliable entropy minimization (Niu et al., ICLR 2023; mr-eggplant/SAR).

Recipe: a statistics policy (default ``tbn``: pure batch statistics, as SAR's BatchNorm
without running statistics) + SAR's parameters (norm affine outside ``layer4`` and ViT
blocks 9-11, so every BatchNorm of a CIFAR ResNet) + SAM over SGD (momentum 0.9, not
nesterov) + the one-step function ``tta.methods.sar.sar_step``: the reliable-entropy
filter, the two SAM passes, the loss moving average and the model recovery (the model
reloads its initial state when the average falls below 0.2; SGD momentum survives, as in
the reference). The prediction is the first forward's logits, before the update.

Defaults: CIFAR lr 1e-3 (mariodoebler/test-time-adaptation ``cfgs/cifar10_c/sar.yaml``,
which builds SAM(SGD) whatever its optimizer setting); ImageNet SAR ``main.py``'s rule for the
run's batch size B: 2.5e-4 at B >= 32, else 2.5e-4·B/32 (so 1.25e-4 at tta's ImageNet-C batch
of 16; ``tta.methods.sar.sar_lr``). ``tta.adapt`` without ``run_batch_size=`` takes B = 64. State across batches: the parameters, SGD momentum and the moving average
(``adapter.memory.state``). GroupNorm/LayerNorm models keep their norms (stats="none") and
adapt their affine parameters, as SAR does for ResNet-50-GN and ViT.

The step (``sar_step``).

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
from ._adapter import Adapter
from ._entropy import all_finite, entropy_margin, masked_mean, softmax_entropy
from ._gradient import NO_BATCHNORM, gradient_adapter, is_norm_layer, stats_options
from ._options import Derived, Option, when
from ._recipe import register_method, Resolved
from ._step_output import StepResult, StepState


EMA_DECAY = 0.9  # SAR sar.py update_ema (not an option)

#: top-level modules SAR and DeYO leave frozen: ResNet layer4 and ViT-B blocks 9-11 and final norm
SKIPPED_NAME_PARTS = ("layer4", "blocks.9", "blocks.10", "blocks.11", "norm.")
SKIPPED_NAMES = ("norm",)


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


def sar_lr(batch_size: int, *, vit: bool = False) -> float:
    """SAR's ImageNet learning rate for batch size B (SAR main.py); CIFAR's is the option's default.

    2.5e-4 for B >= 32, else 2.5e-4·B/32 (BN/GN ResNets); ViT: 1e-3·B/64; doubled at B = 1 (the
    reference's single-sample experiment).
    """
    if batch_size < 1:
        raise TTAError(f"SAR: batch_size must be >= 1, got {batch_size}")
    lr = 1e-3 / 64 * batch_size if vit else (2.5e-4 if batch_size >= 32 else 2.5e-4 / 64 * batch_size * 2)
    return 2 * lr if batch_size == 1 else lr


def reference_imagenet_lr(context: dict) -> float:
    """SAR's (and DeYO's) ImageNet learning rate for the run's batch size (64 when unknown)."""
    return sar_lr(context.get("run_batch_size") or 64)


def make_sar_optimizer(params: Iterable[nn.Parameter], lr: float, *, momentum: float, rho: float) -> SAM:
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
    margin_factor: float,
    reset_threshold: float,
    keep_ema_after_reset: bool,
    ema_decay: float = EMA_DECAY,
) -> StepResult:
    """One SAR step on batch ``x``; returns the first-forward logits.

    ``model`` must already use batch statistics and have only SAR's parameters in
    ``optimizer`` (see ``sar_parameters``). ``restore()`` is called when the model recovery
    fires; it must restore the model's initial state (not the optimizer's, see the module
    docstring). Works at B = 1 (batch statistics over one image's pixels).
    """
    if not isinstance(optimizer, SAM):
        raise TTAError("SAR needs a SAM optimizer for its two-pass update; "
                       "build it with make_sar_optimizer")
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
            return StepResult(logits.detach(), collapsed=True, diagnostics={"selected_1": int(mask1.sum())})
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
        diagnostics={"selected_1": n1, "selected_2": n2, "mask_1": mask1, "mask_2": mask2,
               "ema": float("nan") if state.ema is None else state.ema},
    )


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
        Option("rho", float, 0.05, "SAM radius (SAR main.py)", low=0),
        Option("margin_factor", float, 0.4, "entropy filter E0 = margin_factor * ln C", low=0,
               open_low=True),
        Option("reset_threshold", float, 0.2, "model recovery when the loss average falls below (e_m, SAR sar.py)",
               low=0),
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
