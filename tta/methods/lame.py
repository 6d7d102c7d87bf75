"""``lame``: Laplacian-regularized output adjustment of a frozen model (Boudiaf et al., CVPR 2022).

Recipe: a statistics policy (``source`` by default: the pretrained model in eval mode, no
adaptation) + LAME's bound optimization on each batch's penultimate features
(``lame``, below; see docs/methods.md, "LAME"). Nothing is learned: no
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

The solver (``lame``): Laplacian-regularized adjustment of a frozen model's output probabilities.

Boudiaf, Mueller, Ben Ayed, Bertinetto, "Parameter-free Online Test-time Adaptation",
CVPR 2022; official code fiveai/LAME ``src/adaptation/lame.py`` (copied by the
mariodoebler and UnMix-TNS frameworks). For a batch of N samples with logits z and
penultimate features F:

* unary a = -log(softmax(z) + 1e-10) (N, K); phi = F / ||F|| row-wise; D = pairwise
  Euclidean distances of phi;
* affinity W (N, N):
  - ``rbf`` (the official default): sigma = mean over rows of the min(knn, N)-th smallest
    distance of the row, self included; W = exp(-D^2 / (2 sigma^2)), diagonal kept;
  - ``kNN``: W_ij = 1 for the min(knn + 1, N) - 1 nearest j != i, else 0 (not symmetric);
  - ``linear``: W = phi phi^T;
  - ``force_symmetry``: W <- (W + W^T) / 2 (off by default);
* bound optimization, lambda = 1, at most 100 iterations::

      Y = softmax(-a)
      repeat: P = lambda W Y; Y = softmax(-a + P)
              E = sum(a Y - lambda P Y + Y log(clip(Y, 1e-20)))
              stop when i > 1 and |E - E_old| <= 1e-8 |E_old|

* the result is Y, **probabilities**, not logits.

Defaults (affinity rbf, knn 5, sigma unused, no symmetry) are fiveai's
``src/config/defaults.py`` and ``configs/method/best/LAME/overall_best.yaml``, the same as
the mariodoebler/UnMix-TNS ``conf.py``.

Degenerate rbf: the self-distance 0 counts as the first neighbour, so sigma = 0 whenever
knn = 1, N = 1, or every row's knn-th distance is 0, and the official rbf then returns
NaN for the whole batch. Here rbf with sigma = 0 returns softmax(z) unchanged. kNN at
N = 1 has no neighbour (W = 0, so Y = softmax(z) as official); linear follows the
official iterations at any N.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ._adapter import Adapter
from ._gradient import NO_BATCHNORM, stats_options
from ._model_parts import classifier_layer
from ._options import Option
from ._recipe import register_method, Resolved
from ._stats_policy import get_stats


AFFINITIES = ("rbf", "kNN", "linear")
DEFAULT_AFFINITY = "rbf"
DEFAULT_KNN = 5
MAX_STEPS = 100
BOUND_LAMBDA = 1.0


def pairwise_distances(phi: torch.Tensor) -> torch.Tensor:
    """(N, N) Euclidean distances computed as differences (exact zeros on the diagonal)."""
    return torch.cdist(phi, phi, compute_mode="donot_use_mm_for_euclid_dist")


def affinity(phi: torch.Tensor, kind: str, knn: int) -> torch.Tensor | None:
    """Affinity of normalized features ``phi`` (N, d); None for rbf when sigma = 0 (see module doc)."""
    n = phi.shape[0]
    if kind == "linear":
        return phi @ phi.t()
    if knn < 1:
        raise InputError(f"LAME knn must be at least 1, got {knn}")
    dist = pairwise_distances(phi)
    if kind == "kNN":
        index = dist.topk(min(knn + 1, n), dim=-1, largest=False).indices[:, 1:]
        w = torch.zeros(n, n, device=phi.device, dtype=phi.dtype)
        return w.scatter_(-1, index, 1.0)
    if kind == "rbf":
        kth = dist.topk(k=min(knn, n), dim=-1, largest=False).values[:, -1]
        sigma = kth.mean()
        if not bool(sigma > 0):
            return None
        return torch.exp(-dist**2 / (2 * sigma**2))
    raise InputError(f"unknown LAME affinity {kind!r}; choose one of {', '.join(AFFINITIES)}")


def entropy_energy(y: torch.Tensor, unary: torch.Tensor, pairwise: torch.Tensor, bound_lambda: float) -> torch.Tensor:
    return (unary * y - bound_lambda * pairwise * y + y * torch.log(y.clip(1e-20))).sum()


def laplacian_optimization(unary: torch.Tensor, kernel: torch.Tensor, bound_lambda: float = BOUND_LAMBDA,
                           max_steps: int = MAX_STEPS) -> torch.Tensor:
    """The official bound iterations and stopping rule; returns the assignment probabilities Y (N, K).

    The energy is read back once per iteration (as the official ``.item()`` does) for the stopping test.
    """
    old_e = float("inf")
    y = (-unary).softmax(-1)
    for i in range(max_steps):
        pairwise = bound_lambda * kernel.matmul(y)
        y = (-unary + pairwise).softmax(-1)
        e = entropy_energy(y, unary, pairwise, bound_lambda).item()
        if i > 1 and abs(e - old_e) <= 1e-8 * abs(old_e):
            break
        old_e = e
    return y


@torch.no_grad()
def lame(logits: torch.Tensor, features: torch.Tensor, affinity_kind: str, knn: int, force_symmetry: bool,
         bound_lambda: float = BOUND_LAMBDA, max_steps: int = MAX_STEPS) -> torch.Tensor:
    """LAME's output for one batch: adjusted class probabilities (N, K) from logits (N, K) and features (N, d)."""
    if logits.dim() != 2 or features.dim() != 2 or logits.shape[0] != features.shape[0]:
        raise InputError(
            f"LAME needs logits (N, K) and features (N, d) for the same N, got {tuple(logits.shape)} "
            f"and {tuple(features.shape)}"
        )
    unary = -torch.log(logits.softmax(dim=1) + 1e-10)
    kernel = affinity(F.normalize(features, p=2, dim=-1), affinity_kind, knn)
    if kernel is None:
        return logits.softmax(dim=1)
    if force_symmetry:
        kernel = 0.5 * (kernel + kernel.t())
    return laplacian_optimization(unary, kernel, bound_lambda, max_steps)


@torch.no_grad()
def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features (N, d), logits (N, K)) from one forward: the classifier's input is captured.

    For the CIFAR backbones this is the pooled, flattened last feature map (after the final
    BN + ReLU for WRN-28-10 and ResNeXt-29), the same split as the mariodoebler framework's
    ``split_up_model``.
    """
    captured: list[torch.Tensor] = []
    handle = classifier_layer(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise InputError(f"the classifier ran {len(captured)} times in one forward; LAME expects exactly once")
    return captured[0].flatten(1), logits


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
