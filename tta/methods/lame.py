"""``lame``: Laplacian-regularized output adjustment of a frozen model (Boudiaf et al., CVPR 2022).

Recipe: a statistics policy (``source`` by default: the pretrained model in eval mode, no
adaptation) + LAME's bound optimization on each batch's penultimate features
(``tta.methods.lame_solver``; see docs/methods.md, "LAME"). Nothing is learned: no
optimizer, no gradients, no state; the adapter runs under ``torch.no_grad()`` and works
inside ``torch.inference_mode()``.

**The adapter returns LAME's probabilities Y, not logits**, as the official code does
(fiveai/LAME ``src/adaptation/lame.py``); ``adapter.output == "probabilities"`` tells
``tta run`` to score Y directly instead of taking its softmax.

Defaults are fiveai's ``defaults.py`` and ``configs/method/best/LAME/overall_best.yaml``
(the same in the mariodoebler and UnMix-TNS configs, for every dataset): rbf affinity,
knn 5, no forced symmetry, lambda 1, at most 100 iterations.

Batch of 1: rbf has no neighbour to set its width (sigma = 0; the official code returns
NaN), kNN has no neighbour at all, so both return the model's softmax unchanged; linear
follows the official iterations (its self-affinity only).

Over UnMix-TNS (``stats="unmix-tns"``), as devavratTomar/unmixtns composes it: the
UnMix-TNS layers normalize and move their components in the one forward per batch, and
the Laplacian adjustment is applied on top.
"""
from __future__ import annotations

import torch
from torch import nn

from .adapter import Adapter
from .lame_solver import AFFINITIES, DEFAULT_AFFINITY, DEFAULT_KNN, classifier_layer, features_and_logits, lame
from .gradient import NO_BATCHNORM, stats_options
from .options import Option
from .policy import get_stats
from .registry import Resolved, register_method


def lame_adapter_step(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    """Features and logits in one frozen forward, then LAME's probabilities for the batch."""
    hp = adapter.hparams()
    with torch.no_grad():
        features, logits = features_and_logits(adapter.model, x)
        return lame(logits, features, hp["affinity"], hp["knn"], hp["force_symmetry"])


@register_method(
    "lame",
    summary="LAME: Laplacian adjustment of a frozen model's probabilities on batch features (returns probabilities)",
    paper="Boudiaf, Mueller, Ben Ayed, Bertinetto, CVPR 2022; fiveai/LAME",
    options=(
        *stats_options("source"),
        Option("affinity", str, DEFAULT_AFFINITY, "feature affinity", choices=AFFINITIES),
        Option("knn", int, DEFAULT_KNN, "neighbours (rbf: the width's neighbour, self included)", low=1),
        Option("force_symmetry", bool, False, "symmetrize the affinity"),
    ),
    defaults=(NO_BATCHNORM,),
    notes="no gradients; stats=unmix-tns composes as the UnMix-TNS code does",
    needs_grad=False,
)
def lame_method(model: nn.Module, opts: Resolved) -> Adapter:
    policy = get_stats(opts["stats"], "lame")
    policy.swap(model, opts["stats_options"])
    model.requires_grad_(False)
    classifier_layer(model)  # fail at construction, not at the first batch
    adapter = opts.adapter(
        model, step=lame_adapter_step, needs_grad=False,
        min_batch_size=policy.batch_minimum(opts["stats_options"]), min_batch_reason=policy.min_batch_reason,
        batch_context=policy.batch_context if policy.has_batch_context() else None,
    )
    adapter.output = "probabilities"
    return adapter
