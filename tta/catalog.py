"""Human-readable listings of every registry, used by ``tta list``."""
from __future__ import annotations

from typing import Callable

from .methods import METHODS
from .methods._recipe import WITHHELD
from .models import MODELS
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


def _pending(what: str, issue: str) -> Callable[[], list[str]]:
    def listing() -> list[str]:
        return [f"no {what} are registered yet ({issue} has not landed)"]

    return listing


def norms() -> list[str]:
    from .norms.listing import listing  # noqa: PLC0415

    return listing()


CATALOGS: dict[str, Callable[[], list[str]]] = {
    "methods": methods,
    "models": models,
    "shifts": shifts,
    "corruptions": corruptions,
    "norms": norms,
}
