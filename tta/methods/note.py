"""``note``: NOTE on a pretrained BatchNorm model (Gong et al., NeurIPS 2022), as devavratTomar/unmixtns runs it.

Recipe: statistics policy ``iabn`` (instance-aware BatchNorm swapped into the pretrained
model without retraining, k = 4, running-statistics momentum 0.01) + PBRS memory
(``tta.memory.pbrs``, draws from the adapter's generator) + entropy on the memory. The
step is ``tta.methods.note_step`` (see docs/methods.md, "NOTE"): predict the test batch
in eval mode; each sample enters the memory with its pseudo-label; every
``update_frequency`` samples, mid-batch if need be, one train-mode forward of the memory
(IABN running statistics move) and one optimizer step on HLoss (the mean of
-p log(p + 1e-6) over all B x C entries). **The returned logits are from before any update.**

Defaults: CIFAR: the port's ``cfgs/cifar10_c/note.yaml``, Adam lr 1e-3, beta 0.9, no weight
decay; memory and update every 64 samples (NOTE's own scripts; the port's ``conf.py`` has no
NOTE node). ImageNet: the port's ``cfgs/imagenet_c/note.yaml``, SGD lr 1e-5, momentum 0.9,
Nesterov (its ``conf.py`` default), memory and update every 16. NOTE's own scripts use
Adam lr 1e-4 with weight decay 5e-4 on models trained with IABN.

Over UnMix-TNS (``stats="unmix-tns"``): UnMix-TNS layers replace BatchNorm, so no IABN is
inserted; the eval forward of every test batch and each memory forward move the
components; the UnMix-TNS scripts' learning rate applies (Adam 1e-5 on CIFAR, SGD Nesterov
2.5e-6 on ImageNet). The port cannot run as released (NOTE is not registered there), so
this composition follows its code, not published numbers.

Batch of 1: works (NOTE itself is per-sample).
"""
from __future__ import annotations

import torch
from torch import nn

from ..memory.module import MemoryModule
from ..memory.pbrs import PBRS
from .adapter import Adapter
from .note_step import UPDATE_FREQUENCY, note_step
from .gradient import NO_BATCHNORM, UNMIX_PROTOCOL, gradient_adapter, optimizer_options, stats_options
from .options import Option, when
from .registry import Resolved, register_method
from .rotta import num_classes_of


def note_adapter_step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    """One port ``forward_and_adapt``: eval-mode logits of ``x``, then memory inserts and updates."""
    memory = adapter.memory
    with torch.enable_grad():
        logits, seen = note_step(adapter.model, memory.bank, adapter.optimizer, x, int(memory.seen),
                                 adapter.generator, update_frequency=adapter.hparams()["update_frequency"])
    memory.seen.fill_(seen)
    return logits


@register_method(
    "note",
    summary="NOTE: IABN on a pretrained BN model + prediction-balanced memory + entropy on the memory",
    paper="Gong et al., NeurIPS 2022; TaesikGong/NOTE, port devavratTomar/unmixtns",
    options=(
        *stats_options("iabn"),
        Option("memory_size", int, 64, "PBRS capacity", low=2),
        Option("update_frequency", int, UPDATE_FREQUENCY, "samples between two updates", low=1),
        Option("num_classes", int, None, "classes of the memory (None: the classifier's outputs)", low=1,
               nullable=True),
        Option("seed", int, 0, "seed of the memory's random draws", low=0, from_context="run_seed"),
        *optimizer_options("adam", 1e-3),
    ),
    defaults=(
        when(dataset="imagenet")(memory_size=16, update_frequency=16, optimizer="sgd", lr=1e-5,
                                 momentum=0.9, nesterov=True),
        NO_BATCHNORM,
        *UNMIX_PROTOCOL,
    ),
    notes="stats=unmix-tns composes as the UnMix-TNS code does (UnMix-TNS replaces IABN)",
)
def note(model: nn.Module, opts: Resolved) -> Adapter:
    bank = PBRS(opts["memory_size"], num_classes_of(model, opts["num_classes"], "note"))
    return gradient_adapter(model, opts, None, step=note_adapter_step, memory=MemoryModule(bank),
                            seed=opts["seed"])
