"""``deyo``: destroy-your-object entropy minimization (Lee et al., ICLR 2024; Jhyun17/DeYO).

Recipe: a statistics policy (default ``tbn``, batch statistics) + SAR's parameter set + the
one-step function ``tta.methods.deyo.deyo_step``: entropy filter τ = 0.5 ln C, the
patch-shuffled copies of the confident images, the PLPD filter and the reweighted entropy
loss. The prediction is the pre-update logits. The patch permutations come from the
adapter's generator, seeded by ``seed`` (the run's seed by default), so a run is
reproducible and the generator state is saved with the adapter.

Defaults: CIFAR Adam 1e-3, τ_PLPD 0.2 (mariodoebler/test-time-adaptation ``cfgs/*/deyo.yaml``);
ImageNet SGD momentum 0.9 without nesterov, τ_PLPD 0.3, and SAR's learning-rate rule for
the run's batch size B, 2.5e-4 at B >= 32, else 2.5e-4·B/32 (DeYO ``exp_deyo.sh``,
ResNet-50-BN). DeYO keeps no state besides the parameters and optimizer.

The step (``deyo_step``): destroy-your-object entropy minimization.

Reference: Jhyun17/DeYO ``methods/deyo.py``/``main.py``/``exp_deyo.sh``; mariodoebler/
test-time-adaptation (below "mdb") ``methods/deyo.py``. Per batch (docs/methods.md, "Entropy-filtering methods"):

1. z = f(x); e = H(z); S1 = {e < τ_Ent}, τ_Ent = 0.5 ln C. Empty S1: no update.
2. x' = the S1 images with their P×P patch grid shuffled per sample (P = 4); z' = f(x')
   without gradients (batch statistics of x' alone, as in the reference).
3. PLPD_i = p_i[ŷ_i] - p'_i[ŷ_i], ŷ = argmax p; S2 = S1 ∩ {PLPD > τ_PLPD}. Empty: no update.
4. L = mean_{S2} α e with α = 1/exp(e - E0) + 1/exp(-PLPD) (detached), E0 = 0.4 ln C.
5. One optimizer step; the pre-update logits are the prediction.

The parameters are SAR's (``tta.methods.sar.sar_parameters``). Randomness: the patch
(or pixel) permutation is drawn from the ``generator`` passed in, on the CPU, in the
reference's form ``argsort(rand(n, P²))``.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ._adapter import Adapter
from ._entropy import all_finite, entropy_margin, masked_mean, softmax_entropy
from ._gradient import NO_BATCHNORM, gradient_adapter, is_norm_layer, optimizer_options, stats_options
from ._options import Option, when
from ._recipe import register_method, Resolved
from ._step_output import StepResult, StepState
from .sar import IMAGENET_LR, sar_parameters


Augmentation = Literal["patch", "pixel", "occ"]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize: torchvision's ``Resize`` on tensors, which the reference calls."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def patch_shuffle(x: torch.Tensor, patch_len: int, generator: torch.Generator | None = None,
                  perm: torch.Tensor | None = None) -> torch.Tensor:
    """Cut each image into a patch_len × patch_len grid and permute its patches, per sample.

    Sides not divisible by patch_len are resized down to a multiple first and back after,
    as the reference does. ``perm`` (n, patch_len²) overrides the drawn permutation.
    """
    n, c, h, w = x.shape
    p = patch_len
    th, tw = (h // p) * p, (w // p) * p
    if th == 0 or tw == 0:
        raise InputError(f"DeYO: images of {h}x{w} are smaller than the {p}x{p} patch grid; use a smaller patch_len")
    resized = (th, tw) != (h, w)
    y = _resize(x, (th, tw)) if resized else x
    if perm is None:
        perm = torch.argsort(torch.rand(n, p * p, generator=generator), dim=-1)
    perm = perm.to(x.device)
    patches = y.reshape(n, c, p, th // p, p, tw // p).permute(0, 2, 4, 1, 3, 5).reshape(n, p * p, c, th // p, tw // p)
    patches = torch.gather(patches, 1, perm.view(n, p * p, 1, 1, 1).expand_as(patches))
    y = patches.reshape(n, p, p, c, th // p, tw // p).permute(0, 3, 1, 4, 2, 5).reshape(n, c, th, tw)
    return _resize(y, (h, w)) if resized else y


def pixel_shuffle(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random permutation of the pixel positions, shared by the batch (DeYO ``pixel``)."""
    n, c, h, w = x.shape
    perm = torch.randperm(h * w, generator=generator).to(x.device)
    return x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)


def occlude(x: torch.Tensor, size: int = 112, row: int = 56, col: int = 56) -> torch.Tensor:
    """Fill a size × size window at (row, col) with each image's per-channel mean (DeYO ``occ``)."""
    out = x.clone()
    out[:, :, row : row + size, col : col + size] = x.mean(dim=(2, 3), keepdim=True)
    return out


def destroy(x: torch.Tensor, aug: Augmentation, *, patch_len: int,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """DeYO's object-destroying transform of a batch."""
    if aug == "patch":
        return patch_shuffle(x, patch_len, generator)
    if aug == "pixel":
        return pixel_shuffle(x, generator)
    if aug == "occ":
        return occlude(x)
    raise InputError(f"DeYO: unknown augmentation {aug!r}; use 'patch', 'pixel' or 'occ'")


def deyo_step(
    model: nn.Module,
    x: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    generator: torch.Generator | None,
    plpd_threshold: float,
    filter_factor: float,
    weight_factor: float,
    aug: Augmentation,
    patch_len: int,
    reweight_ent: bool,
    reweight_plpd: bool,
) -> StepResult:
    """One DeYO step; returns the pre-update logits. DeYO carries no state beyond the
    parameters and the optimizer. Works at B = 1."""
    with torch.enable_grad():
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        if not all_finite(logits):
            return StepResult(logits.detach(), collapsed=True)
        num_classes = logits.shape[1]
        ent = softmax_entropy(logits)
        mask1 = ent < entropy_margin(num_classes, filter_factor)
        n1 = int(mask1.sum())
        if n1 == 0:
            return StepResult(logits.detach(), diagnostics={"selected_1": 0, "selected_2": 0, "mask_1": mask1})
        idx1 = mask1.nonzero().squeeze(1)
        x_destroyed = destroy(x[idx1].detach(), aug, patch_len=patch_len, generator=generator)
        with torch.no_grad():
            logits_destroyed = model(x_destroyed)
        probs = logits.detach()[idx1].softmax(1)
        label = probs.argmax(1, keepdim=True)
        plpd_sel = (probs.gather(1, label) - logits_destroyed.softmax(1).gather(1, label)).squeeze(1)
        plpd = torch.full_like(ent.detach(), float("nan"))
        plpd[idx1] = plpd_sel
        mask2 = mask1.clone()
        mask2[idx1] = plpd_sel > plpd_threshold
        n2 = int(mask2.sum())
        diagnostics: dict[str, Any] = {"selected_1": n1, "selected_2": n2, "mask_1": mask1, "mask_2": mask2, "plpd": plpd}
        if n2 == 0:
            return StepResult(logits.detach(), diagnostics=diagnostics)
        coeff = torch.zeros_like(ent)
        if reweight_ent:
            coeff = coeff + 1 / torch.exp(ent.detach() - entropy_margin(num_classes, weight_factor))
        if reweight_plpd:
            coeff = coeff + 1 / torch.exp(-1.0 * torch.nan_to_num(plpd))
        weighted = ent * coeff if (reweight_ent or reweight_plpd) else ent
        loss = masked_mean(weighted, mask2)
        if not all_finite(logits_destroyed, loss):
            return StepResult(logits.detach(), collapsed=True, diagnostics=diagnostics)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return StepResult(logits.detach(), updated=True, loss=float(loss.detach()), diagnostics=diagnostics)


@register_method(
    "deyo",
    summary="DeYO: entropy minimization of samples whose prediction depends on object shape (PLPD filter)",
    paper="Lee, Jung, Lee, Park, Shin, Kim, ICLR 2024; Jhyun17/DeYO",
    options=(
        *stats_options("tbn"),
        Option("plpd_threshold", float, 0.2, "keep samples whose PLPD exceeds this (DeYO config.py)"),
        Option("filter_factor", float, 0.5, "entropy filter τ = filter_factor * ln C (DeYO deyo_margin)", low=0,
               open_low=True),
        Option("weight_factor", float, 0.4, "entropy weight margin E0 = weight_factor * ln C (deyo_margin_e0)",
               low=0, open_low=True),
        Option("aug", str, "patch", "object-destroying transform", choices=("patch", "pixel", "occ")),
        Option("patch_len", int, 4, "patch grid side of the patch shuffle", low=1),
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
