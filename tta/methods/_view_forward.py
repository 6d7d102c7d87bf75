"""Run V views of a batch through a batch-statistics model in one forward, as V separate calls would.

CoTTA's teacher normalizes with the statistics of the batch it is called on, and the
official code calls it once per augmented view. Concatenating the views into one
(V*B, C, H, W) batch keeps the convolutions large, but a plain BatchNorm would then
pool statistics over all views. Inside :func:`per_view_statistics`, every
``nn.BatchNorm1d/2d`` that normalizes with batch statistics computes them per group of
B samples instead; a module that defines ``forward_grouped(x, n_groups)`` is called
through it. Every other module is assumed per-sample (convolutions, activations,
pooling, GroupNorm/LayerNorm, eval-mode BatchNorm on running statistics). A layer whose
statistics carry state from call to call (e.g. UnMix-TNS components, an EMA of batch
statistics) makes the official 32 calls sequential; grouping them would change the
result, so a grouped forward that changes any buffer raises an error: use one view per
call for such models.

Measured on CPU (``benchmarks/bench_cotta_views.py``, ResNet-20, 32 views of 64 images,
one thread): one forward over all views ran about 3x slower than 32 separate calls,
because a 2,048-image batch's activations leave the cache (plain eval forwards of one
2,048 batch vs 32 batches of 64 show the same 2x-3x gap; ``torch.func.vmap`` was slower
still). So :func:`forward_views` defaults to one view per call on CPU and to all views in
one call on an accelerator, where one large launch is the point.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ._buffers import restore_buffers, snapshot_buffers
from ._moments import grouped_batch_stats, normalize_grouped


def _uses_batch_stats(m: nn.Module) -> bool:
    return isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and (m.training or m.running_mean is None)


def _grouped_batch_norm(m: nn.BatchNorm1d | nn.BatchNorm2d, n_groups: int, x: torch.Tensor) -> torch.Tensor:
    mean, var = grouped_batch_stats(x, n_groups)
    return normalize_grouped(x, mean, var, m.weight, m.bias, m.eps)


@contextlib.contextmanager
def per_view_statistics(model: nn.Module, n_views: int) -> Iterator[nn.Module]:
    """Within the block, ``model`` computes batch statistics per group of ``len(x) // n_views`` samples."""
    patched = []
    try:
        for m in model.modules():
            if hasattr(m, "forward_grouped"):
                m.forward = (lambda x, m=m: m.forward_grouped(x, n_views))
                patched.append(m)
            elif _uses_batch_stats(m):
                if m.training and m.track_running_stats and m.running_mean is not None:
                    raise ValueError("per-view statistics would skip the running-statistics update of a train-mode "
                                     "BatchNorm; call it on a model whose BatchNorm keeps no running statistics")
                m.forward = (lambda x, m=m: _grouped_batch_norm(m, n_views, x))
                patched.append(m)
        yield model
    finally:
        for m in patched:
            del m.forward


def forward_views(model: nn.Module, views: torch.Tensor, views_per_call: int | None = None) -> torch.Tensor:
    """Logits (V, B, K) of views (V, B, C, H, W), each view normalized with its own batch statistics.

    ``views_per_call`` views share one forward (grouped statistics); default: all of them
    on an accelerator, 1 on CPU. With 1 this is the official loop, arithmetic included;
    grouped reductions round differently (about 1e-5 on CIFAR ResNet logits).
    """
    n_views = views.shape[0]
    if views_per_call is None:
        views_per_call = 1 if views.device.type == "cpu" else n_views
    if views_per_call < 1:
        raise ValueError(f"views_per_call must be >= 1, got {views_per_call}")
    outs = []
    for chunk in views.split(views_per_call):
        if chunk.shape[0] == 1:
            outs.append(model(chunk[0]).unsqueeze(0))
            continue
        before = snapshot_buffers(model)
        with per_view_statistics(model, chunk.shape[0]):
            outs.append(model(chunk.flatten(0, 1)).unflatten(0, chunk.shape[:2]))
        changed = restore_buffers(model, before)  # leave the model as it was
        if changed:
            raise RuntimeError(f"a grouped forward over views changed buffer {changed[0]!r}: this model carries "
                               "statistics from call to call, so its views must run one per call "
                               "(views_per_call=1)")
    return torch.cat(outs)
