"""The names the command line accepts, without importing torch: methods and their options, statistics
policies, shifts. Checked before any heavy import, so a misspelt name costs well under a second and gets a
"did you mean". The tables repeat what the registries declare (``tta.methods``, ``tta.streams.shifts``);
``tests/test_cli_fast_errors.py`` fails when they drift apart, naming the entry to update.
"""
from __future__ import annotations

import difflib
import sys
from typing import Iterable

from .errors import InputError, UnknownNameError

#: the method ``tta.adapt(model)`` and ``tta run`` use when none is named: safe on i.i.d. and label-correlated
#: streams alike (issue #30; benchmarks/results/leaderboard-full/README.md, "Regime-aware"). A model it cannot run
#: (no BatchNorm, no final nn.Linear) gets ``source`` instead, with a warning (``tta.adaptation.default_method``).
DEFAULT_METHOD = "regime-aware"

#: every registered method -> the options ``-O KEY=VALUE`` may set (``tta list methods`` describes them)
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "adab2n": ("kappa", "momentum", "normalize", "domain_prior"),
    "alpha-bn": ("source_weight",),
    "alpha-bn-mcc": ("stats", "stats_options", "temperature", "optimizer", "lr", "beta", "momentum", "nesterov",
        "weight_decay"),
    "cotta": ("stats", "stats_options", "mt", "rst", "ap", "n_augmentations", "symmetric", "views_per_call", "seed",
        "optimizer", "lr", "beta", "momentum", "nesterov", "weight_decay"),
    "deyo": ("stats", "stats_options", "plpd_threshold", "filter_factor", "weight_factor", "aug", "patch_len",
        "reweight_ent", "reweight_plpd", "seed", "optimizer", "lr", "beta", "momentum", "nesterov", "weight_decay"),
    "eata": ("stats", "stats_options", "d_margin", "margin_factor", "optimizer", "lr", "beta", "momentum", "nesterov",
        "weight_decay", "source_data", "fisher_alpha", "fisher_samples", "fisher_batch", "seed"),
    "eta": ("stats", "stats_options", "d_margin", "margin_factor", "optimizer", "lr", "beta", "momentum", "nesterov",
        "weight_decay"),
    "iabn": ("k", "momentum", "skip_threshold"),
    "lame": ("stats", "stats_options", "affinity", "knn", "force_symmetry"),
    "momentum-decay": ("eta0", "decay"),
    "momentum-decay-hbs": ("stats", "stats_options", "entropy_weight", "optimizer", "lr", "beta", "momentum",
        "nesterov", "weight_decay"),
    "note": ("stats", "stats_options", "memory_size", "update_frequency", "num_classes", "seed", "optimizer",
        "lr", "beta",
        "momentum", "nesterov", "weight_decay"),
    "rbn": ("alpha",),
    "regime-aware": ("d_margin", "margin_factor", "optimizer", "lr", "beta", "momentum", "nesterov", "weight_decay",
        "stats", "stats_options", "unmix_init", "affinity", "knn", "force_symmetry", "detector_images", "grad_images",
        "rho", "enter", "leave", "history", "warmup", "start", "mixed_spread", "mixed_K", "mixed_init", "mixed_enter",
        "mixed_leave"),
    "rdumb": ("stats", "stats_options", "d_margin", "margin_factor", "optimizer", "lr", "beta", "momentum",
        "nesterov",
        "weight_decay", "reset_every"),
    "roid": ("stats", "stats_options", "use_weighting", "use_prior_correction", "use_consistency", "momentum_src",
        "momentum_probs", "temperature", "loss_batch_size", "seed", "optimizer", "lr", "beta", "momentum", "nesterov",
        "weight_decay"),
    "rotta": ("stats", "stats_options", "memory_size", "update_frequency", "nu", "lambda_t", "lambda_u",
        "num_classes",
        "seed", "optimizer", "lr", "beta", "momentum", "nesterov", "weight_decay"),
    "sar": ("stats", "stats_options", "lr", "momentum", "rho", "margin_factor", "reset_threshold",
        "keep_ema_after_reset"),
    "shot-im": ("stats", "stats_options", "optimizer", "lr", "beta", "momentum", "nesterov", "weight_decay"),
    "source": (),
    "tbn": ("prior",),
    "tbn-ema": ("momentum", "passes"),
    "tent": ("stats", "stats_options", "optimizer", "lr", "beta", "momentum", "nesterov", "weight_decay"),
    "unmix-tns": ("K", "batch_size", "batch_size_max", "alpha", "tau", "seed"),
}
#: values of ``stats=`` for methods that compose a statistics policy
STATS_POLICIES: tuple[str, ...] = (
    "adab2n", "alpha-bn", "iabn", "momentum-decay", "none", "rbn", "source", "tbn", "tbn-ema", "unmix-tns",
)
#: methods asked for by name that tta deliberately does not build (``tta.methods._recipe.WITHHELD`` says why)
WITHHELD_METHODS: tuple[str, ...] = ("core",)
#: shift protocols (``tta list shifts``)
SHIFTS: tuple[str, ...] = ("iid", "continual", "mixed", "gradual", "switching", "switching-reverse")
#: option names a composing method still accepts, renamed (``tta.methods._recipe._deprecated_norm_alias``)
RENAMED_OPTIONS = {"norm": "stats", "norm_options": "stats_options"}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    choices = list(choices)
    close = difflib.get_close_matches(_key(name), [_key(c) for c in choices], n=1, cutoff=0.6)
    if not close:
        return ""
    original = next(c for c in choices if _key(c) == close[0])
    return f" (did you mean {original!r}?)"


def _registered_at_runtime(kind: str) -> set[str]:
    """Methods (or statistics policies) registered by code that already imported the registry (``register_method``
    in a notebook or a plugin): valid too, and looked up without importing torch when nothing did."""
    module = sys.modules.get("tta.methods._recipe" if kind == "method" else "tta.methods._stats_policy")
    registry = getattr(module, "METHODS" if kind == "method" else "STATS", None) if module else None
    return set(registry) if registry is not None else set()


def resolve_method(name: str, flag: str = "--method") -> str:
    """The registered spelling of ``name``: exact, or the same ignoring case and ``_``/``-``; else one error line."""
    if name in METHOD_OPTIONS or name in _registered_at_runtime("method"):
        return name
    same = [m for m in METHOD_OPTIONS if _key(m) == _key(name)]
    if same:
        return same[0]
    if _key(name) in WITHHELD_METHODS:
        return _key(name)  # the method registry explains why it is not available
    raise UnknownNameError(f"unknown method {name!r}{did_you_mean(name, METHOD_OPTIONS)}; choose one of: "
                           f"{', '.join(METHOD_OPTIONS)} (tta list methods), e.g. {flag} tent")


def check_options(method: str, options: Iterable[str], flag: str = "-O") -> None:
    """Raise one line naming an option ``method`` does not declare, with the closest declared one."""
    declared = METHOD_OPTIONS.get(method)
    if declared is None:
        return
    allowed = set(declared) | ({*RENAMED_OPTIONS} if "stats" in declared else set())
    for key in options:
        if key not in allowed:
            known = ", ".join(declared) or "none"
            example = next((f"{flag} {o}=VALUE" for o in declared if o not in ("stats", "stats_options")),
                           f"no {flag}" if not declared else f"{flag} {declared[0]}=VALUE")
            raise InputError(f"method {method!r} has no option {key!r}{did_you_mean(key, declared)}; its options: "
                             f"{known} (tta list methods), e.g. {example}")


def check_stats(value: object, method: str) -> None:
    """``stats=`` names a statistics policy."""
    if isinstance(value, str) and value not in STATS_POLICIES and value not in _registered_at_runtime("stats"):
        raise UnknownNameError(f"method {method!r}: unknown statistics policy stats={value!r}"
                               f"{did_you_mean(value, STATS_POLICIES)}; choose one of: {', '.join(STATS_POLICIES)}")


def resolve_shift(name: str, flag: str = "--shift") -> str:
    """A registered shift name (case-insensitive), else one error line with a suggestion."""
    if name in SHIFTS:
        return name
    if name.strip().lower() in SHIFTS:
        return name.strip().lower()
    raise UnknownNameError(f"unknown shift {name!r}{did_you_mean(name, SHIFTS)}; choose one of: {', '.join(SHIFTS)}, "
                           f"optionally with @DELTA or @sorted, e.g. {flag} continual@0.1")


def parse_shift(text: str) -> tuple[str, float | None, bool]:
    """``continual`` | ``continual@0.1`` (Dirichlet δ; ``@0`` class-sorted) | ``continual@sorted`` ->
    (shift, delta, sorted), the same syntax for ``tta run --shift`` and ``tta sweep --shifts``."""
    if not isinstance(text, str):
        raise InputError(f"a shift is a name such as continual or continual@0.1, got {text!r}")
    name, sep, variant = text.strip().partition("@")
    if not name:
        raise InputError(f"empty shift in {text!r}; write e.g. continual, continual@0.1 or continual@sorted")
    name = resolve_shift(name)
    if not sep:
        return name, None, False
    if variant.strip() == "sorted":
        return name, None, True
    try:
        delta = float(variant)
    except ValueError:
        raise InputError(f"shift variant {text!r}: after @ put a Dirichlet delta such as 0.1, or 'sorted'") from None
    if not delta >= 0 or delta == float("inf"):
        raise InputError(f"shift variant {text!r}: the delta must be a finite number >= 0 (0: class-sorted)")
    return name, delta, False
