"""RoTTA's per-batch step as plain functions over (student, teacher, memory, optimizer).

Yuan, Xie, Li, "Robust Test-Time Adaptation in Dynamic Scenarios", CVPR 2023; official
code BIT-DA/RoTTA ``core/adapter/rotta.py``. Setup (:func:`configure_rotta`): every
BatchNorm1d/2d becomes an RBN layer (:mod:`tta.methods.rbn_layer`, alpha 0.05) whose
gamma, beta are the only trainable parameters; the teacher is a copy of the student made
*after* the swap. One call on a test batch x (:func:`rotta_step`):

1. both models in eval mode; the teacher predicts z = teacher(x) (RBN frozen);
   p = softmax(z), pseudo-label argmax p, uncertainty -sum p log(p + 1e-6);
2. for each sample in batch order: add it to the CSTU memory, count it, and every
   ``update_frequency`` (64) samples run :func:`rotta_update`, possibly mid-batch;
3. return z: nothing learned from this batch changes its own predictions.

:func:`rotta_update`: both models in train mode (their RBN statistics move); the memory
batch X (by class, then insertion) is strongly augmented once (:mod:`tta.augment.rotta`);
the teacher sees X, the student the augmented X; the loss is the mean over the memory of
timeliness weight times the cross-entropy of the student's log-softmax against the
teacher's softmax; one Adam step (lr 1e-3, betas (0.9, 0.999), no weight decay); then the
teacher's parameters (all of them, not the buffers) move by EMA with nu = 0.001.
Defaults are BIT-DA's ``configs/adapter/rotta.yaml``. BIT-DA's stream skips batches of one
image; these functions process them (the teacher runs in eval mode, so nothing breaks).
Only BatchNorm affine parameters train, as in BIT-DA (the mariodoebler and UnMix-TNS
ports also train LayerNorm/GroupNorm affine parameters).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from ..augment.rotta import rotta_augment
from ..memory.cstu import CSTU, timeliness_weight
from .bn_swap import replace_batchnorm
from .rbn_layer import DEFAULT_ALPHA, RobustBatchNorm

UPDATE_FREQUENCY = 64
NU = 0.001
LR = 1e-3
BETAS = (0.9, 0.999)

Augment = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def configure_rotta(model: nn.Module, alpha: float = DEFAULT_ALPHA) -> tuple[nn.Module, nn.Module, list[nn.Parameter]]:
    """Swap BatchNorm for RBN in ``model`` (in place), freeze all but RBN affine; return (student, teacher, params)."""
    model.requires_grad_(False)
    replace_batchnorm(model, lambda bn: RobustBatchNorm(bn, alpha), "rotta")
    params: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, RobustBatchNorm):
            for p in (module.weight, module.bias):
                if p is not None:
                    p.requires_grad_(True)
                    params.append(p)
    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.detach_()
        p.requires_grad_(False)
    return model, teacher, params


def rotta_optimizer(params: list[nn.Parameter], lr: float = LR, betas: tuple[float, float] = BETAS,
                    weight_decay: float = 0.0) -> torch.optim.Adam:
    """BIT-DA's optimizer: Adam(lr 1e-3, betas (OPTIM.BETA = 0.9, 0.999), wd 0)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, nu: float = NU) -> None:
    """theta_T <- (1 - nu) theta_T + nu theta_S over all parameters, paired in order."""
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists; build the teacher with configure_rotta")
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
    generator: torch.Generator | None = None,
    *,
    nu: float = NU,
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
    memory: CSTU,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    seen: int,
    generator: torch.Generator | None = None,
    *,
    update_frequency: int = UPDATE_FREQUENCY,
    nu: float = NU,
    augment: Augment = rotta_augment,
) -> tuple[torch.Tensor, int]:
    """One official ``forward_and_adapt`` on test batch ``x``; ``seen`` counts samples so far.

    Returns (teacher logits of ``x`` from before any update, new ``seen``).
    """
    with torch.no_grad():
        student.eval()
        teacher.eval()
        logits = teacher(x)
        p = torch.softmax(logits, dim=1)
        labels = torch.argmax(p, dim=1).tolist()
        uncertainty = torch.sum(-p * torch.log(p + 1e-6), dim=1).tolist()
    for i in range(x.shape[0]):
        memory.add(x[i], labels[i], uncertainty[i])
        seen += 1
        if seen % update_frequency == 0:
            rotta_update(student, teacher, memory, optimizer, generator, nu=nu, augment=augment)
    return logits, seen


__all__ = [
    "configure_rotta", "rotta_optimizer", "ema_update_", "consistency_loss", "rotta_update", "rotta_step",
    "UPDATE_FREQUENCY", "NU", "LR", "BETAS",
]
