"""``tta list norms``: every norm kind with its options and which adapters apply to it."""
from __future__ import annotations

from torch import nn

from .registry import NORMS, NormSpec


def _statistics_methods() -> list[str]:
    """Registered methods that refuse a model without BatchNorm (they rewrite BN statistics)."""
    from ..adaptation import adapt  # noqa: PLC0415
    from ..errors import TTAError  # noqa: PLC0415
    from ..methods import METHODS  # noqa: PLC0415

    probe = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(2))
    names = []
    for name in METHODS:
        try:
            adapt(probe, method=name)
        except TTAError:
            names.append(name)
        except Exception:  # noqa: BLE001  (a method that fails otherwise is not a statistics method)
            continue
    return names


def _applies(spec: NormSpec, stats_methods: list[str]) -> str:
    stats = ", ".join(stats_methods) or "none registered"
    if spec.batch_stats:
        return f"BatchNorm statistics at test time: statistics adapters apply ({stats}); tent adapts the affine parameters"
    if spec.affine:
        return (f"no BatchNorm: statistics adapters ({stats}) raise an error; "
                "tent adapts this layer's affine parameters; source evaluates as is")
    return f"no norm layers: statistics adapters ({stats}) and tent raise an error; only source applies"


def _backbones(spec: NormSpec) -> str:
    if spec.tokens is None:
        return "CNNs (conv feature maps)"
    return f"CNNs, and vit-cifar* transformers as {spec.tokens.__name__} over tokens"


def listing() -> list[str]:
    stats_methods = _statistics_methods()
    lines: list[str] = []
    for name, spec in NORMS.items():
        opts = ", ".join(f"{k}={v}" for k, v in spec.defaults().items()) or "-"
        lines.append(f"{name:10s} {spec.summary}")
        lines.append(f"{'':10s}   paper: {spec.paper}")
        lines.append(f"{'':10s}   options: {opts}")
        if spec.conv is not None:
            lines.append(f"{'':10s}   convs: every nn.Conv2d becomes {spec.conv.__self__.__name__}")
        lines.append(f"{'':10s}   adapters: {_applies(spec, stats_methods)}")
        lines.append(f"{'':10s}   backbones: {_backbones(spec)}")
        if spec.aliases:
            lines.append(f"{'':10s}   aliases: {', '.join(spec.aliases)}")
        lines.append("")
    return lines[:-1]
