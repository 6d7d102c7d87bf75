"""Normalization layers usable as backbone options, and ``swap_norm``.

``tta.build_model(name, norm=kind, **options)`` / ``tta.load_model(..., norm=kind)``
build a backbone with any kind below; ``swap_norm(model, kind)`` converts a
BatchNorm backbone in place. Kinds that change the convolutions (``bcn``: WS
convs; ``scaled-ws``: scaled-WS convs and no norm layers) carry a conv
transform that both paths apply. Kinds with a token form (``ln``, ``rmsnorm``,
``crmsnorm``, ``powernorm``) also build the ``vit-cifar`` transformers, whose
norm placement (Pre-LN, Post-LN, LayerNorm Scaling, Mix-LN) is in ``placement``.
"""
from .bcn import BatchChannelNorm2d, EstBN
from .ghost_bn import GhostBatchNorm2d
from .group_norm import fitted_groups, group_norm
from .instance_norm import instance_norm
from .layer_norm import LayerNorm2d
from ._placement import SCHEMES, BlockNorms, block_plan
from .power_norm import PowerNorm1d, PowerNorm2d, group_scaling
from ._kinds import NORMS, MakeNorm, NormFactory, NormSpec, get_norm, norm_factory, register_norm, token_kinds
from .rms_norm import CRMSNorm, CRMSNorm2d, RMSNorm, RMSNorm2d, crms_norm, rms_norm
from .scaled_ws import ScaledStdConv2d
from ._swap import swap_norm
from .ws_conv import WSConv2d, standardize

__all__ = [
    "SCHEMES", "BatchChannelNorm2d", "BlockNorms", "CRMSNorm", "CRMSNorm2d", "EstBN", "GhostBatchNorm2d", "LayerNorm2d", "MakeNorm", "NORMS",
    "NormFactory", "NormSpec", "PowerNorm1d", "PowerNorm2d", "RMSNorm", "RMSNorm2d", "ScaledStdConv2d", "WSConv2d",
    "block_plan", "crms_norm", "fitted_groups", "get_norm", "group_norm", "group_scaling", "instance_norm", "norm_factory",
    "register_norm", "rms_norm", "standardize", "swap_norm", "token_kinds",
]
