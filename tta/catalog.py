"""Human-readable listings of every registry, used by ``tta list``."""
from __future__ import annotations

from typing import Callable

from .methods import METHODS
from .methods.registry import WITHHELD
from .models import MODELS
from .streams.shifts import listing as shifts


def _fmt_opts(opts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in opts.items()) or "-"


def methods() -> list[str]:
    lines = []
    for name, cls in METHODS.items():
        lines.append(f"{name:16s} {cls.summary}")
        lines.append(f"{'':16s}   paper: {cls.paper}")
        for dataset, opts in cls.dataset_defaults.items():
            lines.append(f"{'':16s}   defaults[{dataset}]: {_fmt_opts(opts)}")
        for shift, opts in getattr(cls, "shift_defaults", {}).items():
            lines.append(f"{'':16s}   defaults[shift={shift}]: {_fmt_opts(opts)}")
        if cls.min_batch_size > 1:
            lines.append(f"{'':16s}   needs batches of >= {cls.min_batch_size} images")
        if cls.notes:
            lines.append(f"{'':16s}   note: {cls.notes}")
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
