"""Norm kinds by name: ``norm_factory(kind, **options)`` builds the layer factory backbones take."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..errors import InputError
from ..name_registry import Registry
from .bcn import BatchChannelNorm2d
from .ghost_bn import GhostBatchNorm2d
from .group_norm import group_norm
from .instance_norm import instance_norm
from .layer_norm import LayerNorm2d
from .power_norm import PowerNorm1d, PowerNorm2d
from .rms_norm import CRMSNorm, CRMSNorm2d, RMSNorm, RMSNorm2d
from .scaled_ws import ScaledStdConv2d
from .ws_conv import WSConv2d

ConvTransform = Callable[..., nn.Conv2d]
#: what a backbone takes to build each norm layer: a width (channels, or token features) -> the layer.
#: ``nn.BatchNorm2d``, ``nn.LayerNorm`` and every ``NormFactory`` are ones.
MakeNorm = Callable[[int], nn.Module]


@dataclass(frozen=True)
class NormSpec:
    """One normalization option: how to build the layer and, if needed, how to change the convs.

    ``conv`` (when set) maps an ``nn.Conv2d`` to its replacement; ``conv_options``
    names the options routed to it instead of the layer. ``running_statistics`` says the
    layer keeps BatchNorm running statistics at test time (so BN-statistics
    adapters apply); ``affine`` says it has learnable per-channel or per-group
    scales a gradient adapter such as TENT can tune. ``tokens`` (when set) builds
    the same normalization over the last dimension of (B, L, D) tokens, which is
    what transformer backbones (``vit-cifar``) take; it accepts the layer's options.
    """

    name: str
    layer: Callable[..., nn.Module]
    summary: str
    paper: str
    running_statistics: bool
    affine: bool
    conv: ConvTransform | None = None
    conv_options: tuple[str, ...] = ()
    aliases: tuple[str, ...] = field(default=())
    tokens: Callable[..., nn.Module] | None = None

    def defaults(self) -> dict[str, Any]:
        """Every documented option with its default value (layer and conv)."""
        out: dict[str, Any] = {}
        for fn in (self.layer, self.conv):
            if fn is None:
                continue
            for p in list(inspect.signature(fn).parameters.values())[1:]:
                if p.default is not p.empty and p.name not in ("device", "dtype"):
                    out[p.name] = p.default
        return out


def _identity(num_channels: int) -> nn.Module:  # noqa: ARG001  (signature of a norm layer)
    return nn.Identity()


NORMS: Registry[NormSpec] = Registry("norm")
_ALIASES: dict[str, str] = {}


def register_norm(spec: NormSpec) -> NormSpec:
    NORMS.add(spec.name, spec)
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def get_norm(kind: str) -> NormSpec:
    return NORMS.get(_ALIASES.get(kind, kind))


register_norm(NormSpec(
    "bn", nn.BatchNorm2d, "BatchNorm (reference): batch statistics in training, running statistics at test",
    "Ioffe & Szegedy, ICML 2015; PyTorch nn.BatchNorm2d (momentum 0.1, eps 1e-5)", True, True,
    aliases=("batchnorm",),
))
register_norm(NormSpec(
    "ghost-bn", GhostBatchNorm2d, "Ghost BatchNorm: BN statistics per virtual batch of virtual_batch_size",
    "Hoffer, Hubara & Soudry, NeurIPS 2017; eladhoffer/bigBatch", True, True, aliases=("gbn",),
))
register_norm(NormSpec(
    "gn", group_norm, "GroupNorm: per sample over channel groups (G = 32, fitted to the width by gcd)",
    "Wu & He, ECCV 2018", False, True, aliases=("groupnorm",),
))
register_norm(NormSpec(
    "ln", LayerNorm2d, "LayerNorm over the channels at each pixel (ConvNeXt LayerNorm2d); gn num_groups=1 is LN over (C,H,W)",
    "Ba, Kiros & Hinton 2016; PyTorch nn.LayerNorm", False, True, aliases=("layernorm",), tokens=nn.LayerNorm,
))
register_norm(NormSpec(
    "in", instance_norm, "InstanceNorm: per sample and channel, affine, no running statistics",
    "Ulyanov, Vedaldi & Lempitsky 2016; PyTorch nn.InstanceNorm2d", False, True, aliases=("instancenorm",),
))
register_norm(NormSpec(
    "bcn", BatchChannelNorm2d, "Batch-Channel Norm after Weight-Standardized convs (WS convs are swapped in too)",
    "Qiao et al. 2019, arXiv 1911.09738; joe-siyuan-qiao/Batch-Channel-Normalization, WeightStandardization",
    True, True, conv=WSConv2d.from_conv, conv_options=("ws_eps",), aliases=("bcn-ws",),
))
register_norm(NormSpec(
    "scaled-ws", _identity, "normalization-free: no norm layers, Scaled Weight-Standardized convs (FedWon)",
    "Brock et al. NF-Nets, ICLR/ICML 2021 (timm ScaledStdConv2d); Zhuang & Lyu FedWon, ICLR 2024",
    False, False, conv=ScaledStdConv2d.from_conv, conv_options=("gamma", "ws_eps"), aliases=("nf", "fedwon"),
))
register_norm(NormSpec(
    "powernorm", PowerNorm2d, "PowerNorm: running quadratic mean, no mean subtraction, approximate backward",
    "Shen et al., ICML 2020; sIncerass/powernorm mask_powernorm.py", False, True, aliases=("pn",),
    tokens=PowerNorm1d,
))
register_norm(NormSpec(
    "rmsnorm", RMSNorm2d, "RMSNorm over the channels at each pixel (eps 1e-8 outside the sqrt)",
    "Zhang & Sennrich, NeurIPS 2019; bzhangGo/rmsnorm", False, True, aliases=("rms",), tokens=RMSNorm,
))
register_norm(NormSpec(
    "crmsnorm", CRMSNorm2d, "CRMSNorm: the channels are a compressed zero-mean (C+1)-vector; equals LN of that vector",
    "Jiang et al., NeurIPS 2023; ZixuanJiang/pre-rmsnorm-transformer", False, True, tokens=CRMSNorm,
))


class NormFactory:
    """``factory(num_channels) -> layer``; ``convert_convs(model)`` applies the spec's conv transform.

    ``tta.build_model(name, norm=kind)`` calls both, so a backbone built with
    ``bcn`` has WS convs and one built with ``scaled-ws`` has scaled-WS convs.
    """

    def __init__(self, spec: NormSpec, options: dict[str, Any]) -> None:
        known = spec.defaults()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InputError(
                f"norm {spec.name!r} has no option {unknown[0]!r}; its options are: "
                f"{', '.join(f'{k}={v}' for k, v in known.items()) or 'none'}"
            )
        self.spec = spec
        self.layer_options = {k: v for k, v in options.items() if k not in spec.conv_options}
        self.conv_options = {k: v for k, v in options.items() if k in spec.conv_options}

    def __call__(self, num_channels: int) -> nn.Module:
        return self._build(self.spec.layer, num_channels)

    def tokens(self, dim: int) -> nn.Module:
        """The layer over the last dimension of (B, L, D) tokens, for transformer backbones."""
        if self.spec.tokens is None:
            raise InputError(
                f"norm {self.spec.name!r} works on conv feature maps only; a transformer backbone takes "
                f"one of: {', '.join(token_kinds())}"
            )
        return self._build(self.spec.tokens, dim)

    def _build(self, layer: Callable[..., nn.Module], width: int) -> nn.Module:
        try:
            return layer(width, **self.layer_options)
        except TypeError as exc:
            raise InputError(f"bad options for norm {self.spec.name!r} ({exc}); see `tta list norms`") from None

    def convert_convs(self, model: nn.Module) -> nn.Module:
        """Replace every ``nn.Conv2d`` of ``model`` in place by the spec's conv (no-op without one)."""
        if self.spec.conv is None:
            return model
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Conv2d:
                    setattr(parent, name, self.spec.conv(child, **self.conv_options))
        return model

    # build_model calls this hook on the freshly built backbone
    finish_model = convert_convs

    def __repr__(self) -> str:
        return f"NormFactory({self.spec.name!r}, {self.layer_options | self.conv_options})"


def token_kinds() -> list[str]:
    """Norm kinds that also exist over (B, L, D) tokens (for ``vit-cifar``)."""
    return [name for name, spec in NORMS.items() if spec.tokens is not None]


def norm_factory(kind: str, **options: Any) -> NormFactory:
    """The layer factory for ``kind`` (see ``tta list norms``) with ``options`` over its defaults."""
    return NormFactory(get_norm(kind), options)
