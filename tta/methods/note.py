"""``note``: NOTE on a pretrained BatchNorm model (Gong et al., NeurIPS 2022), as devavratTomar/unmixtns runs it.

Recipe: statistics policy ``iabn`` (instance-aware BatchNorm swapped into the pretrained
model without retraining, k = 4, running-statistics momentum 0.01) + PBRS memory
(``tta.methods._sample_memory``, draws from the adapter's generator) + entropy on the memory. The
step (see docs/methods.md, "NOTE"): predict the test batch
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

The step, as the devavratTomar/unmixtns port runs it on a pretrained BN model.

Gong et al., "NOTE: Robust Continual Test-time Adaptation Against Temporal Correlation",
NeurIPS 2022 (official code TaesikGong/NOTE, one sample at a time); batched port
devavratTomar/unmixtns ``methods/note.py``. Setup (the recipe): every BatchNorm2d becomes
IABN (statistics policy ``iabn``, k 4, running-statistics momentum 0.01); only the
normalization layers' gamma, beta train. One call on a test batch x (:func:`note_step`):

1. eval mode: z = model(x) (IABN against the running statistics); pseudo-labels argmax z;
2. for each sample in batch order: add it to the PBRS memory, count it, and every
   ``update_frequency`` (64) samples run :func:`note_update`, possibly mid-batch;
3. return z (from before any update).

:func:`note_update`: train mode, one forward of the whole memory (IABN moves its running
statistics and normalizes against the memory's statistics), loss = :func:`hloss`, one
optimizer step. The port's model then stays in train mode until the next call sets eval.

Optimizer: the port's ``cfgs/cifar10_c/note.yaml`` gives Adam lr 1e-3, betas (0.9, 0.999),
wd 0 (its ``run.sh`` overrides lr to 1e-5 when UnMix-TNS is inside); NOTE's own scripts
use Adam lr 1e-4 with the conf default weight decay 5e-4 on CIFAR. The port cannot run as
released (NOTE is not registered and ``conf.py`` has no ``NOTE`` node), so memory size and
update frequency 64 and momentum 0.01 are NOTE's own values (ImageNet-C yaml: 16).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ._adapter import Adapter
from ._gradient import NO_BATCHNORM, UNMIX_PROTOCOL, gradient_adapter, optimizer_options, stats_options
from ._model_parts import num_classes
from ._options import Option, when
from ._recipe import register_method, Resolved
from ._sample_memory import PBRS, MemoryModule
from ._step_output import StepResult


def hloss(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """NOTE's HLoss: mean over all B x C entries of -p log(p + 1e-6), p = softmax(z / T) (1/C of the usual entropy)."""
    p = F.softmax(logits / temperature, dim=1)
    return (-p * torch.log(p + 1e-6)).mean()


def note_update(model: nn.Module, memory: PBRS, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """One port ``update_model``: train mode, entropy of the memory batch, one step. None if memory is empty."""
    model.train()
    x_mem = memory.get_memory()
    if len(x_mem) == 0:
        return None
    loss = hloss(model(x_mem))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def note_step(
    model: nn.Module,
    memory: MemoryModule,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    generator: torch.Generator | None,
    *,
    update_frequency: int,
) -> StepResult:
    """One port ``forward_and_adapt`` on ``x``: the logits from before any update. ``memory`` holds the
    PBRS bank and ``seen``, the samples offered so far (both advance); ``diagnostics["updates"]`` counts
    the updates this batch triggered."""
    with torch.no_grad():
        model.eval()
        logits = model(x)
        labels = torch.argmax(logits, dim=1).tolist()
    updates = memory.offer(x, labels, [generator] * x.shape[0], update_frequency,
                           lambda: note_update(model, memory.bank, optimizer))
    return StepResult(logits, updated=updates > 0, diagnostics={"updates": updates})


def note_adapter_step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    """One port ``forward_and_adapt``: eval-mode logits of ``x``, then memory inserts and updates."""
    with torch.enable_grad():
        return note_step(adapter.model, adapter.memory, adapter.optimizer, x, adapter.generator,
                         update_frequency=adapter.hparams()["update_frequency"]).logits


@register_method(
    "note",
    summary="NOTE: IABN on a pretrained BN model + prediction-balanced memory + entropy on the memory",
    paper="Gong et al., NeurIPS 2022; TaesikGong/NOTE, port devavratTomar/unmixtns",
    options=(
        *stats_options("iabn"),
        Option("memory_size", int, 64, "PBRS capacity", low=2),
        Option("update_frequency", int, 64, "samples between two updates", low=1),
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
    bank = PBRS(opts["memory_size"], num_classes(model, "note", opts["num_classes"], has_option=True))
    return gradient_adapter(model, opts, None, step=note_adapter_step, memory=MemoryModule(bank),
                            seed=opts["seed"])
