"""``rotta``: Robust Test-Time Adaptation (Yuan, Xie, Li, CVPR 2023; official code BIT-DA/RoTTA).

Recipe: statistics policy ``rbn`` (RoTTA's robust BatchNorm, alpha 0.05) + CSTU memory
(``tta.memory.cstu``) + EMA teacher (a copy of the student made after the swap) + strong
augmentation (``tta.augment.rotta``) + timeliness-weighted consistency loss, one Adam step
every ``update_frequency`` samples. The step is ``tta.methods.rotta_step`` (see
docs/methods.md, "RoTTA"):

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
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InputError
from ..memory.cstu import CSTU
from ..memory.module import MemoryModule
from .adapter import Adapter
from .lame_solver import classifier_layer
from .gradient import NO_BATCHNORM, gradient_adapter, optimizer_options, stats_options
from .options import Option, when
from .registry import Resolved, register_method
from .rotta_step import NU, UPDATE_FREQUENCY, rotta_step

INF = float("inf")


def num_classes_of(model: nn.Module, given: int | None, method: str) -> int:
    """``given``, or the output size of the model's last ``nn.Linear``."""
    if given is not None:
        return given
    try:
        return classifier_layer(model).out_features
    except InputError:
        raise InputError(f"method {method!r} cannot find the model's classifier (a final nn.Linear) to count "
                         "the classes of its memory; pass num_classes=") from None


def check_square_rgb(x: torch.Tensor, method: str) -> None:
    """RoTTA's augmentation takes square RGB images; refuse others before any state changes."""
    if x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise InputError(f"method {method!r} augments square RGB images (B, 3, n, n), got shape "
                         f"{tuple(x.shape)}; resize or crop the images to a square")


def rotta_adapter_step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    """One official ``forward_and_adapt``: teacher logits of ``x``, then memory inserts and updates."""
    check_square_rgb(x, adapter.name)
    hp = adapter.hparams()
    memory = adapter.memory
    with torch.enable_grad():
        logits, seen = rotta_step(adapter.model, adapter.teacher, memory.bank, adapter.optimizer, x,
                                  int(memory.seen), adapter.generator,
                                  update_frequency=hp["update_frequency"], nu=hp["nu"])
    memory.seen.fill_(seen)
    return logits


def _teacher(student: nn.Module) -> nn.Module:
    return copy.deepcopy(student).requires_grad_(False)


@register_method(
    "rotta",
    summary="RoTTA: RBN + category-balanced memory + EMA teacher on strongly augmented memory (teacher logits)",
    paper="Yuan, Xie, Li, CVPR 2023; BIT-DA/RoTTA",
    options=(
        *stats_options("rbn"),
        Option("memory_size", int, 64, "CSTU capacity", low=1),
        Option("update_frequency", int, UPDATE_FREQUENCY, "samples between two updates", low=1),
        Option("nu", float, NU, "teacher EMA rate", low=0, high=1),
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
    bank = CSTU(opts["memory_size"], num_classes_of(model, opts["num_classes"], "rotta"),
                opts["lambda_t"], opts["lambda_u"])
    return gradient_adapter(model, opts, None, step=rotta_adapter_step, memory=MemoryModule(bank),
                            teacher=_teacher, seed=opts["seed"])
