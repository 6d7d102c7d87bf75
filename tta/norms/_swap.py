"""``swap_norm``: convert a BatchNorm backbone to another normalization option in place."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..errors import TTAError
from .bcn import BatchChannelNorm2d
from ._kinds import NormFactory, norm_factory

log = logging.getLogger(__name__)


def _copy_bn(bn: nn.BatchNorm2d, new: nn.Module) -> None:
    """Carry over what still means the same thing in ``new``.

    A BN-family target (GhostBN, BCN's BN part) takes BN's whole state; any
    other layer with a per-channel ``weight``/``bias`` of BN's shape takes γ, β.
    """
    target = new.bn if isinstance(new, BatchChannelNorm2d) else new
    with torch.no_grad():
        if isinstance(target, nn.BatchNorm2d):
            target.load_state_dict(bn.state_dict(), strict=False)
            return
        for name in ("weight", "bias"):
            src, dst = getattr(bn, name, None), getattr(target, name, None)
            if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor) and dst.shape == src.shape:
                dst.copy_(src)


def swap_norm(model: nn.Module, kind: str | NormFactory, **options: Any) -> nn.Module:
    """Replace every BatchNorm2d of ``model`` by ``kind``'s layer and apply its conv transform.

    Works in place and returns ``model``. Learned state is kept where it keeps
    its meaning: GhostBN and BCN's BN part take the whole BN state, other layers
    with per-channel affine take γ and β (``copy_affine=False`` skips that),
    everything else starts at its initialization. WS / scaled-WS convs share the
    original conv weights but compute a different function, so a converted
    pretrained model needs fine-tuning (``tta train``) before use. Each new
    layer is put on the device, dtype and train/eval mode of the layer it replaces.
    """
    copy_affine = options.pop("copy_affine", True)
    factory = kind if isinstance(kind, NormFactory) else norm_factory(kind, **options)
    bns = [(p, n, c) for p in model.modules() for n, c in p.named_children() if isinstance(c, nn.BatchNorm2d)]
    if not bns:
        raise TTAError(
            "swap_norm found no BatchNorm2d layer to convert; build the backbone with "
            f"tta.build_model(name, norm={factory.spec.name!r}) instead"
        )
    for parent, name, bn in bns:
        new = factory(bn.num_features)
        ref = next(iter(bn.buffers()), None)
        if ref is not None:
            new = new.to(device=ref.device, dtype=bn.weight.dtype if bn.weight is not None else ref.dtype)
        if copy_affine:
            _copy_bn(bn, new)
        new.train(bn.training)
        setattr(parent, name, new)
    factory.convert_convs(model)
    log.info("swap_norm: replaced %d BatchNorm2d layers by %s", len(bns), factory.spec.name)
    return model
