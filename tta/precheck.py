"""Checks of run settings that need no torch: one clear line for a mistake, before anything heavy loads.

``tta run`` and ``tta sweep`` (every cell of its grid) call ``check_settings`` first, so an unknown method, a
misspelt option or an impossible value fails in a fraction of a second instead of after the data and the model
are loaded (or, in a sweep, cell after cell).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from .errors import InputError, UnknownNameError
from .names import DEFAULT_METHOD, check_options, check_stats, parse_shift, resolve_method

#: integer settings and the least value each accepts (None: no value given, the default applies)
INT_MINIMA = {"batch_size": 1, "n_examples": 1, "severity": 1, "seed": 0, "workers": 0, "threads": 1}
_FLAGS = {"batch_size": "--batch-size", "n_examples": "--n-examples", "severity": "--severity", "seed": "--seed",
          "workers": "--loader-workers", "threads": "--threads"}
_NON_IMAGENET = ("cifar10", "cifar100", "demo")
#: the most cells one sweep plans; planning fingerprints each cell's stream, about a millisecond to a second each
MAX_CELLS = 10_000


def check_int(name: str, value: Any, as_key: bool = False) -> None:
    """``value`` is None or an integer of at least ``INT_MINIMA[name]`` (and at most 5 for the severity).

    The error names the command-line flag, or with ``as_key`` the setting as a grid file spells it."""
    if value is None and name not in ("severity", "seed"):
        return
    flag = name if as_key else _FLAGS.get(name, name)
    least = INT_MINIMA[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{flag} must be an integer >= {least}, got {value!r}")
    if value < least or (name == "severity" and value > 5):
        what = "1..5" if name == "severity" else f">= {least}"
        meaning = {"batch_size": " (images per adaptation step)", "seed": " (a numpy seed)",
                   "workers": " (0 reads in the main process)"}.get(name, "")
        raise InputError(f"{flag} must be {what}{meaning}, got {value}")


def check_settings(settings: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``settings`` (``RunConfig`` fields) checked, with the method's registered spelling and ``shift@variant``
    split into shift, delta and sort_labels; raises ``InputError`` with one line naming the setting and the fix."""
    out = dict(settings)
    at = f"{where}: " if where else ""
    try:
        if out.get("method") is not None:  # None: the default method, chosen once the model is loaded
            out["method"] = resolve_method(out["method"]) if isinstance(out["method"], str) else _bad("method", out)
        if "shift" in out:
            name, delta, sort = parse_shift(out["shift"])
            out["shift"] = name
            if delta is not None:
                if out.get("delta") not in (None, delta):
                    raise InputError(f"--shift {settings['shift']} and --delta {out['delta']} both set delta; pass one")
                out["delta"] = delta
            if sort:
                out["sort_labels"] = True
        options = out.get("options") or {}
        if not isinstance(options, Mapping):
            raise InputError(f"method options must be KEY=VALUE pairs (a table), got {options!r}")
        if "method" in out:
            method = DEFAULT_METHOD if out["method"] is None else out["method"]
            check_options(method, options)
            if "stats" in options:
                check_stats(options["stats"], method)
        for name in INT_MINIMA:
            if name in out:
                check_int(name, out[name], as_key=bool(where))
        domains = out.get("domains")
        if domains is not None and (not isinstance(domains, (list, tuple)) or not domains
                                    or not all(isinstance(d, str) and d.strip() for d in domains)):
            raise InputError(f"--domains needs at least one corruption name, e.g. --domains gaussian_noise,fog; got "
                             f"{domains!r}")
        delta = out.get("delta")
        number = isinstance(delta, (int, float)) and not isinstance(delta, bool)
        if delta is not None and delta != "default" and not (number and math.isfinite(delta) and delta >= 0):
            raise InputError(f"--delta must be a finite number >= 0 (0: class-sorted), got {delta!r}")
        if out.get("imagenet_subset") is not None and out.get("dataset") in _NON_IMAGENET:
            raise InputError(f"--imagenet-subset applies to ImageNet-C only, not --dataset {out['dataset']}; drop it")
    except (InputError, UnknownNameError) as exc:
        if not at:
            raise
        raise type(exc)(f"{at}{exc}") from None
    return out


def _bad(name: str, settings: Mapping[str, Any]) -> str:
    raise InputError(f"{name} must be a name, got {settings[name]!r}")
