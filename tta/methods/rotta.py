"""``rotta``: Robust Test-Time Adaptation (Yuan, Xie, Li, CVPR 2023; official code BIT-DA/RoTTA).

Recipe: statistics policy ``rbn`` (RoTTA's robust BatchNorm, alpha 0.05) + CSTU memory
(``tta.methods._sample_memory``) + EMA teacher (a copy of the student made after the swap) + strong
augmentation (``rotta_augment``) + timeliness-weighted consistency loss, one Adam step
every ``update_frequency`` samples (see docs/methods.md, "RoTTA"):

1. teacher and student in eval mode; the teacher predicts the test batch;
2. each sample enters the memory with its pseudo-label and entropy, and every 64 samples,
   mid-batch if need be, both models switch to train mode, the teacher sees the memory and
   the student its strong augmentation (one random draw per memory batch, from the
   adapter's generator), one Adam step, and the teacher follows by EMA (nu = 0.001);
3. **the returned logits are the teacher's from step 1**, before any update.

Defaults are BIT-DA's ``configs/adapter/rotta.yaml`` and the same for every dataset
(mariodoebler and UnMix-TNS configs agree): memory 64, update every 64 samples, nu 0.001,
lambda_t = lambda_u = 1, Adam lr 1e-3, beta 0.9, no weight decay. The adapted parameters
are the affine parameters of the norm layers: for BatchNorm CNNs exactly BIT-DA's RBN
gamma, beta; LayerNorm/GroupNorm affine parameters too, as the mariodoebler and UnMix-TNS
ports train.

Over UnMix-TNS (``stats="unmix-tns"``), as devavratTomar/unmixtns composes it: the UnMix-TNS
layers replace BatchNorm before RoTTA is built, so no RBN is inserted; the teacher's copy
has its own components, moved by its eval forward of every test batch and its forward of
the raw memory, while the student's components see only the augmented memory. The
UnMix-TNS scripts' learning rate overrides RoTTA's (Adam 1e-5 on CIFAR, 2.5e-6 on
ImageNet); the optimizer stays Adam, as RoTTA's ImageNet config has it.

Batch of 1: BIT-DA's loop skips such batches; here they are processed (the teacher
predicts in eval mode and the memory fills one sample per call), as mariodoebler does.

The strong augmentation (``rotta_augment``), applied to a whole batch at once.

This is the transform of BIT-DA/RoTTA ``core/utils/custom_transforms.py::get_tta_transforms``
(CoTTA's, with ``soft=False`` and ``gaussian_std=0.005``). The official pipeline is a
``transforms.Compose`` called once on the stacked memory batch, so every random parameter
is drawn once per call and shared by all images; only the additive noise is per pixel.
In order, on images in [0, 1] of side n (32 for CIFAR, 224 for ImageNet)::

    clip(0, 1)
    colour jitter: 5 ops in torch.randperm(5) order, each factor ~ U(range):
        brightness [0.6, 1.4], contrast [0.7, 1.3], saturation [0.5, 1.5],
        hue [-0.06, 0.06], gamma [0.7, 1.3] (gamma after clamp(1e-8, 1))
    pad n/2 with edge values
    affine: angle ~ U(-15, 15), shifts round(U(-n/8, n/8)) px (1/16 of the padded side),
        scale ~ U(0.9, 1.1), bilinear, fill 0
    gaussian blur, kernel 5, sigma ~ U(0.001, 0.5)
    center crop n
    horizontal flip with probability 0.5
    + N(0, 0.005^2) noise per pixel
    clip(0, 1)

The ops are torchvision's tensor functionals (which take any leading batch shape), and
the random draws are made from ``generator`` in exactly the order the official transforms
make them from torch's global generator, so a run is reproducible from its seed and equal
to the official transform seeded the same way. ``soft=True`` gives CoTTA's milder ranges.
BIT-DA passes the pre-0.13 torchvision arguments ``resample=BILINEAR, fillcolor=None``;
those are ``interpolation=BILINEAR`` with the default fill 0 here.

The step, as plain functions over (student, teacher, memory, optimizer): :func:`rotta_step`
is one official ``forward_and_adapt`` (teacher logits of x, then memory inserts and, every
``update_frequency`` samples, :func:`rotta_update`: augment the memory batch once, teacher
on X, student on A(X), timeliness-weighted cross-entropy, one optimizer step, teacher EMA
over all parameters, not the buffers). Both models switch to train mode there (their RBN
statistics move), as the official code does.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torchvision.transforms.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode

from ..errors import InputError
from ._adapter import Adapter
from ._gradient import NO_BATCHNORM, gradient_adapter, optimizer_options, stats_options
from ._model_parts import num_classes
from ._options import Option, when
from ._recipe import register_method, Resolved
from ._sample_memory import CSTU, MemoryModule, timeliness_weight
from ._step_output import StepResult


_HARD = {
    "brightness": (0.6, 1.4),
    "contrast": (0.7, 1.3),
    "saturation": (0.5, 1.5),
    "hue": (-0.06, 0.06),
    "gamma": (0.7, 1.3),
    "degrees": (-15.0, 15.0),
    "scale": (0.9, 1.1),
    "sigma": (0.001, 0.5),
}
_SOFT = {
    "brightness": (0.8, 1.2),
    "contrast": (0.85, 1.15),
    "saturation": (0.75, 1.25),
    "hue": (-0.03, 0.03),
    "gamma": (0.85, 1.15),
    "degrees": (-8.0, 8.0),
    "scale": (0.95, 1.05),
    "sigma": (0.001, 0.25),
}
TRANSLATE = (1 / 16, 1 / 16)
P_HFLIP = 0.5


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return torch.empty(1).uniform_(lo, hi, generator=generator).item()


def _color_jitter(x: torch.Tensor, r: dict, generator: torch.Generator | None) -> torch.Tensor:
    for op in torch.randperm(5, generator=generator).tolist():
        if op == 0:
            x = TF.adjust_brightness(x, _uniform(*r["brightness"], generator))
        elif op == 1:
            x = TF.adjust_contrast(x, _uniform(*r["contrast"], generator))
        elif op == 2:
            x = TF.adjust_saturation(x, _uniform(*r["saturation"], generator))
        elif op == 3:
            x = TF.adjust_hue(x, _uniform(*r["hue"], generator))
        else:
            gamma = _uniform(*r["gamma"], generator)
            x = TF.adjust_gamma(x.clamp(1e-8, 1.0), gamma)
    return x


def rotta_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    soft: bool = False,
    gaussian_std: float = 0.005,
) -> torch.Tensor:
    """Strongly augment a (B, 3, n, n) batch in [0, 1] with one set of random parameters.

    ``generator`` must live on the CPU (the official draws are CPU draws); the noise is
    drawn there and moved to ``x``'s device.
    """
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise InputError(
            f"RoTTA's augmentation takes square RGB batches (B, 3, n, n), got shape {tuple(x.shape)}"
        )
    if generator is not None and generator.device.type != "cpu":
        raise InputError("rotta_augment draws on the CPU like the official transform; pass a CPU torch.Generator")
    r = _SOFT if soft else _HARD
    n = x.shape[-1]
    x = x.clip(0.0, 1.0)
    x = _color_jitter(x, r, generator)
    x = TF.pad(x, padding=int(n / 2), padding_mode="edge")
    size = x.shape[-1]  # square: width == height
    angle = float(_uniform(*r["degrees"], generator))
    max_d = float(TRANSLATE[0] * size)
    tx = int(round(_uniform(-max_d, max_d, generator)))
    ty = int(round(_uniform(-max_d, max_d, generator)))
    scale = float(_uniform(*r["scale"], generator))
    x = TF.affine(
        x, angle, [tx, ty], scale, [0.0, 0.0], interpolation=InterpolationMode.BILINEAR, fill=[0.0] * x.shape[1]
    )
    sigma = _uniform(*r["sigma"], generator)
    x = TF.gaussian_blur(x, [5, 5], [sigma, sigma])
    x = TF.center_crop(x, [n, n])
    if torch.rand(1, generator=generator) < P_HFLIP:
        x = TF.hflip(x)
    noise = torch.randn(x.shape, generator=generator) * gaussian_std + 0.0  # float32, as official
    x = x + noise.to(device=x.device, dtype=x.dtype)
    return x.clip(0.0, 1.0)


Augment = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, nu: float) -> None:
    """theta_T <- (1 - nu) theta_T + nu theta_S over all parameters, paired in order."""
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists; the teacher must be a copy of the student")
    torch._foreach_mul_(t_params, 1 - nu)
    torch._foreach_add_(t_params, s_params, alpha=nu)


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
    """Mean over items of timeliness(age) * (-sum_c softmax(teacher)_c * log_softmax(student)_c)."""
    ce = -(teacher_logits.softmax(1) * student_logits.log_softmax(1)).sum(1)
    return (ce * timeliness_weight(ages)).mean()


def rotta_update(
    student: nn.Module,
    teacher: nn.Module,
    memory: CSTU,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None,
    *,
    nu: float,
    augment: Augment = rotta_augment,
) -> torch.Tensor | None:
    """One official ``update_model``: memory -> augment -> consistency loss -> Adam step -> teacher EMA.

    Returns the (detached) loss, or None when the memory is empty (then only the EMA runs).
    Leaves both models in train mode, as the official code does.
    """
    student.train()
    teacher.train()
    x_mem, ages = memory.get_memory()
    loss = None
    if len(x_mem) > 0:
        strong = augment(x_mem, generator)
        with torch.no_grad():
            teacher_logits = teacher(x_mem)
        student_logits = student(strong)
        loss = consistency_loss(student_logits, teacher_logits, ages.to(student_logits.device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss = loss.detach()
    ema_update_(teacher, student, nu)
    return loss


def rotta_step(
    student: nn.Module,
    teacher: nn.Module,
    memory: MemoryModule,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    generator: torch.Generator | None,
    *,
    update_frequency: int,
    nu: float,
    augment: Augment = rotta_augment,
) -> StepResult:
    """One official ``forward_and_adapt`` on test batch ``x``: the teacher logits of ``x`` from before
    any update. ``memory`` holds the CSTU bank and ``seen``, the samples offered so far (both advance);
    ``diagnostics["updates"]`` counts the updates this batch triggered."""
    with torch.no_grad():
        student.eval()
        teacher.eval()
        logits = teacher(x)
        p = torch.softmax(logits, dim=1)
        labels = torch.argmax(p, dim=1).tolist()
        uncertainty = torch.sum(-p * torch.log(p + 1e-6), dim=1).tolist()
    updates = memory.offer(x, labels, uncertainty, update_frequency,
                           lambda: rotta_update(student, teacher, memory.bank, optimizer, generator, nu=nu,
                                                augment=augment))
    return StepResult(logits, updated=updates > 0, diagnostics={"updates": updates})




def check_square_rgb(x: torch.Tensor, method: str) -> None:
    """RoTTA's augmentation takes square RGB images; refuse others before any state changes."""
    if x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise InputError(f"method {method!r} augments square RGB images (B, 3, n, n), got shape "
                         f"{tuple(x.shape)}; resize or crop the images to a square")


def rotta_adapter_step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    """One official ``forward_and_adapt``: teacher logits of ``x``, then memory inserts and updates."""
    check_square_rgb(x, adapter.name)
    hp = adapter.hparams()
    with torch.enable_grad():
        return rotta_step(adapter.model, adapter.teacher, adapter.memory, adapter.optimizer, x, adapter.generator,
                          update_frequency=hp["update_frequency"], nu=hp["nu"]).logits


def _teacher(student: nn.Module) -> nn.Module:
    return copy.deepcopy(student).requires_grad_(False)


@register_method(
    "rotta",
    summary="RoTTA: RBN + category-balanced memory + EMA teacher on strongly augmented memory (teacher logits)",
    paper="Yuan, Xie, Li, CVPR 2023; BIT-DA/RoTTA",
    options=(
        *stats_options("rbn"),
        Option("memory_size", int, 64, "CSTU capacity", low=1),
        Option("update_frequency", int, 64, "samples between two updates", low=1),
        Option("nu", float, 0.001, "teacher EMA rate", low=0, high=1),
        Option("lambda_t", float, 1.0, "weight of age in the eviction score", low=0),
        Option("lambda_u", float, 1.0, "weight of uncertainty in the eviction score", low=0),
        Option("num_classes", int, None, "classes of the memory (None: the classifier's outputs)", low=2,
               nullable=True),
        Option("seed", int, 0, "seed of the augmentation draws", low=0, from_context="run_seed"),
        *optimizer_options("adam", 1e-3),
    ),
    defaults=(
        NO_BATCHNORM,
        when("UnMix-TNS protocol", stats="unmix-tns", dataset=("cifar10", "cifar100"))(lr=1e-5),
        when("UnMix-TNS protocol", stats="unmix-tns", dataset="imagenet")(lr=2.5e-6),
    ),
    notes="stats=unmix-tns composes as the UnMix-TNS code does (teacher with its own components)",
)
def rotta(model: nn.Module, opts: Resolved) -> Adapter:
    bank = CSTU(opts["memory_size"], num_classes(model, "rotta", opts["num_classes"], has_option=True),
                opts["lambda_t"], opts["lambda_u"])
    return gradient_adapter(model, opts, None, step=rotta_adapter_step, memory=MemoryModule(bank),
                            teacher=_teacher, seed=opts["seed"])


__all__ = ["consistency_loss", "ema_update_", "rotta", "rotta_augment", "rotta_step", "rotta_update"]
