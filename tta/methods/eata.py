"""``eta`` and ``eata``: efficient anti-forgetting entropy minimization (Niu et al., ICML 2022;
mr-eggplant/EATA).

Recipe: a statistics policy (default ``tbn``, batch statistics) + the norm affine
parameters + the one-step function ``tta.methods.eata_step.eta_step``: the reliable
(entropy < 0.4 ln C) and non-redundant (|cos(m, p)| < d_margin) filters and the
entropy-weighted loss. ``eata`` adds the Fisher regularizer α Σ F (θ − θ0)², computed once
at construction from clean source images (``source_data``: a .npy of uint8 NHWC images,
e.g. the CIFAR-10 train set; ``tta run --source-data PATH``). ``eata`` refuses to run
without them; ``eta`` is the source-free variant. The prediction is the pre-update logits.
Over a statistics policy with state (``stats="unmix-tns"``, ``tbn-ema``, ...), which the reference
never pairs with EATA, the Fisher pass leaves the statistics as they were: adaptation starts from
the same state as ``eta`` over that policy.

Defaults (docs/methods.md): CIFAR Adam 1e-3, d_margin 0.4 (CIFAR-100: 0.1), EATA α 1
(mariodoebler/test-time-adaptation ``cfgs/*/{eta,eata}.yaml``); ImageNet SGD 2.5e-4
momentum 0.9 without nesterov, d_margin 0.05, α 2000 (EATA ``main.py``); 2,000 source
images in batches of 64. The parameter set is every norm layer's affine (mdb's; the
reference adapts BatchNorm2d only, the same set on BatchNorm CNNs).

State across batches: parameters, optimizer, the moving average m and the selection
counters (``adapter.memory.state``); for EATA the Fisher and its anchor θ0 (buffers of
``adapter.memory``). ``reset()`` clears m, as mdb does (the EATA reference keeps it).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError, TTAError
from .adapter import Adapter
from .buffers import restore_buffers, snapshot_buffers
from .eata_step import FISHER_BATCH, FISHER_SAMPLES, MARGIN_FACTOR, ETAState, FisherRegularizer, compute_fisher, \
    eta_step
from .gradient import NO_BATCHNORM, gradient_adapter, norm_parameters, optimizer_options, stats_options
from .options import Option, when
from .registry import Resolved, register_method
from .step_state import StepState, register_tensors, registered_tensors

log = logging.getLogger(__name__)

ETA_OPTIONS = (
    *stats_options("tbn"),
    Option("d_margin", float, 0.4, "redundancy filter: drop samples with |cos(m, p)| >= d_margin", low=0),
    Option("margin_factor", float, MARGIN_FACTOR, "entropy filter E0 = margin_factor * ln C", low=0, open_low=True),
    *optimizer_options("adam", 1e-3),
)
ETA_DEFAULTS = (
    when(dataset="cifar100")(d_margin=0.1),
    when(dataset="imagenet")(optimizer="sgd", lr=2.5e-4, momentum=0.9, nesterov=False, d_margin=0.05),
    NO_BATCHNORM,
)
NO_SOURCE = ("method 'eata' needs clean source images for its Fisher regularizer and none were given; pass "
             "source_data=PATH (a .npy of uint8 NHWC images, e.g. the CIFAR-10 train set; tta run --source-data "
             "PATH), or use 'eta', the source-free variant")


class ETAMemory(StepState):
    """ETA's moving average and counters; for EATA also the Fisher and anchor θ0 as buffers."""

    def __init__(self, method: str, fisher: FisherRegularizer | None = None) -> None:
        super().__init__(ETAState(), method)
        self.n_fisher = 0 if fisher is None else len(fisher.fisher)
        self.alpha = 0.0 if fisher is None else fisher.alpha
        if fisher is not None:
            register_tensors(self, "fisher", fisher.fisher)
            register_tensors(self, "anchor", fisher.anchor)

    def regularizer(self, params: list[nn.Parameter]) -> FisherRegularizer | None:
        if self.n_fisher == 0:
            return None
        return FisherRegularizer(params, registered_tensors(self, "fisher", self.n_fisher),
                                 registered_tensors(self, "anchor", self.n_fisher), self.alpha)


def _eta_step(opts: Resolved):
    kw = {"d_margin": opts["d_margin"], "margin_factor": opts["margin_factor"]}

    def step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
        params = adapter.optimizer.param_groups[0]["params"]
        result = eta_step(adapter.model, x, adapter.optimizer, adapter.memory.state,
                          fisher=adapter.memory.regularizer(params), **kw)
        adapter.memory.record_collapse(result.collapsed)
        return result.logits

    return step


@register_method(
    "eta",
    summary="ETA: entropy minimization of reliable, non-redundant samples, weighted by confidence (source-free EATA)",
    paper="Niu et al., ICML 2022; mr-eggplant/EATA",
    options=ETA_OPTIONS,
    defaults=ETA_DEFAULTS,
    notes="stats=<statistics policy> composes; GN/LN-only models adapt their own norm affine",
)
def eta(model: nn.Module, opts: Resolved) -> Adapter:
    return gradient_adapter(model, opts, None, step=_eta_step(opts), memory=ETAMemory("eta"))


def load_source_images(path: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random images (without replacement) of a .npy of uint8 (N, H, W, 3) images, as uint8 NCHW."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"method 'eata': source_data {path!r} is not a file; pass a .npy of uint8 NHWC images "
                         "(e.g. the CIFAR-10 train_images.npy)")
    try:
        images = np.load(file, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise InputError(f"method 'eata': cannot read source_data {path!r} as .npy ({err}); "
                         "pass a .npy of uint8 NHWC images") from err
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise InputError(f"method 'eata': source_data {path!r} holds {images.dtype} {images.shape}; "
                         "expected uint8 images of shape (N, H, W, 3)")
    pick = torch.randperm(images.shape[0], generator=generator)[:n].sort().values.numpy()
    return torch.from_numpy(np.ascontiguousarray(images[pick])).permute(0, 3, 1, 2)


@register_method(
    "eata",
    summary="EATA: ETA plus a Fisher regularizer toward the source weights (needs clean source images)",
    paper="Niu et al., ICML 2022; mr-eggplant/EATA",
    options=(
        *ETA_OPTIONS,
        Option("source_data", str, None, "a .npy of clean uint8 NHWC source images for the Fisher", nullable=True),
        Option("fisher_alpha", float, 1.0, "weight α of the Fisher regularizer", low=0),
        Option("fisher_samples", int, FISHER_SAMPLES, "source images drawn for the Fisher", low=1),
        Option("fisher_batch", int, FISHER_BATCH, "batch size of the Fisher pass", low=1),
        Option("seed", int, 0, "seed of the source-image draw", low=0, from_context="run_seed"),
    ),
    defaults=(*ETA_DEFAULTS, when(dataset="imagenet")(fisher_alpha=2000.0)),
    notes="requires source_data (tta run --source-data PATH); eta is the source-free variant",
)
def eata(model: nn.Module, opts: Resolved) -> Adapter:
    if opts["source_data"] is None:
        raise TTAError(NO_SOURCE)
    generator = torch.Generator().manual_seed(opts["seed"])
    source = load_source_images(opts["source_data"], opts["fisher_samples"], generator)

    def memory(student: nn.Module) -> ETAMemory:
        params = norm_parameters(student)
        ref = next(iter(params))
        images = source.to(ref.device, ref.dtype).div_(255)  # in the model's precision
        # a stateful statistics policy (unmix-tns, tbn-ema, rbn, ...) would fold the source batches into its
        # statistics; the reference has none (batch statistics only), so the pass leaves every buffer as it was
        before = snapshot_buffers(student)
        fisher = compute_fisher(student, params, images, alpha=opts["fisher_alpha"],
                                num_samples=opts["fisher_samples"], batch_size=opts["fisher_batch"],
                                generator=generator)
        restore_buffers(student, before)
        log.info("eata: Fisher from %d source images of %s", source.shape[0], opts["source_data"])
        return ETAMemory("eata", fisher)

    return gradient_adapter(model, opts, None, step=_eta_step(opts), memory=memory)
