"""Human-readable listings of every registry, used by ``tta list``."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .adaptation import adapt
from .errors import TTAError
from .methods import METHODS, WITHHELD
from .models import MODELS
from .names import DEFAULT_METHOD
from .norms import NORMS, NormSpec
from .streams.shifts import listing as shifts


def methods() -> list[str]:
    """Every method with its declared options, default rules, batch minimum and notes.

    Statistics-only methods are also statistics policies for ``stats=`` of gradient methods.
    """
    lines = []
    pad = f"{'':16s}   "
    for name, recipe in METHODS.items():
        kind = "statistics policy" if recipe.stats_only else "gradient" if recipe.needs_grad else "no gradients"
        lines.append(f"{name:16s} {recipe.summary}")
        lines.append(f"{pad}kind: {kind}; paper: {recipe.paper}")
        if name == DEFAULT_METHOD:
            lines.append(f"{pad}the default: tta.adapt(model) and tta run without --method use it")
        described = recipe.options.describe()
        lines += [f"{pad}{line}" for line in described] or [f"{pad}options: none"]
        if recipe.min_batch_size > 1:
            lines.append(f"{pad}needs batches of >= {recipe.min_batch_size} images")
        if recipe.notes:
            lines.append(f"{pad}note: {recipe.notes}")
    for name, why in sorted(WITHHELD.items()):
        if name not in METHODS:
            lines.append(f"{name:16s} (not available) {why}")
    return lines


def models() -> list[str]:
    lines = []
    for name, spec in MODELS.items():
        alias = f" (robustbench: {spec.robustbench_name})" if spec.robustbench_name else ""
        lines.append(f"{name:16s} {spec.dataset:9s} {spec.input_size}px {spec.num_classes} classes  {spec.description}{alias}")
    return lines


def corruptions() -> list[str]:
    from .corruptions import ALL_CORRUPTIONS, CORRUPTIONS, PRESETS

    lines = []
    for name in ALL_CORRUPTIONS:
        kind = "standard" if name in CORRUPTIONS else "extra"
        lines.append(f"{name:18s} {kind}")
        for preset in PRESETS.values():
            lines.append(f"{'':18s}   {preset.name}: {', '.join(map(_fmt_param, preset.params[name]))}")
    return lines


def _fmt_param(p) -> str:
    if hasattr(p, "tolist"):  # zoom factors
        return f"zooms {p[0]:g}..{p[-1]:g}"
    return f"{p}"


def _statistics_methods() -> list[str]:
    """Registered methods that refuse a model without BatchNorm (they rewrite BN statistics)."""
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


def _applies(spec: NormSpec, statistics_methods: list[str]) -> str:
    stats = ", ".join(statistics_methods) or "none registered"
    if spec.running_statistics:
        return f"BatchNorm statistics at test time: statistics adapters apply ({stats}); tent adapts the affine parameters"
    if spec.affine:
        return (f"no BatchNorm: statistics adapters ({stats}) raise an error; "
                "tent adapts this layer's affine parameters; source evaluates as is")
    return f"no norm layers: statistics adapters ({stats}) and tent raise an error; only source applies"


def _backbones(spec: NormSpec) -> str:
    if spec.tokens is None:
        return "CNNs (conv feature maps)"
    return f"CNNs, and vit-cifar* transformers as {spec.tokens.__name__} over tokens"


def norms() -> list[str]:
    """Every norm kind with its options and which adapters apply to it."""
    statistics_methods = _statistics_methods()
    lines: list[str] = []
    for name, spec in NORMS.items():
        opts = ", ".join(f"{k}={v}" for k, v in spec.defaults().items()) or "-"
        lines.append(f"{name:10s} {spec.summary}")
        lines.append(f"{'':10s}   paper: {spec.paper}")
        lines.append(f"{'':10s}   options: {opts}")
        if spec.conv is not None:
            lines.append(f"{'':10s}   convs: every nn.Conv2d becomes {spec.conv.__self__.__name__}")
        lines.append(f"{'':10s}   adapters: {_applies(spec, statistics_methods)}")
        lines.append(f"{'':10s}   backbones: {_backbones(spec)}")
        if spec.aliases:
            lines.append(f"{'':10s}   aliases: {', '.join(spec.aliases)}")
        lines.append("")
    return lines[:-1]


CATALOGS: dict[str, Callable[[], list[str]]] = {
    "methods": methods,
    "models": models,
    "shifts": shifts,
    "corruptions": corruptions,
    "norms": norms,
}
