"""Values of command-line flags: repeatable ``KEY=VALUE`` options, ``--delta``, ``--domains``, ``--checkpoint-every``."""
from __future__ import annotations

import json
import math
from typing import Any

from tta.errors import InputError


def parse_key_values(pairs: tuple[str, ...], flag: str, example: str) -> dict[str, Any]:
    """``("a=1", "b=x")`` -> ``{"a": 1, "b": "x"}``; values are read as JSON where they parse, else kept as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"{flag} expects KEY=VALUE, got {pair!r}; e.g. {flag} {example}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = {"true": True, "false": False}.get(raw.lower(), raw)
    return out


def parse_delta(value: str | None) -> float | str | None:
    """``--delta``: a finite number >= 0, ``default`` (the dataset's protocol value) or absent."""
    if value is None or value == "default":
        return value
    value = value.strip()
    try:
        delta = float(value)
    except ValueError:
        raise InputError(f"--delta expects a number such as 0.1, got {value!r}") from None
    if not math.isfinite(delta) or delta < 0:
        raise InputError(f"--delta must be a finite number >= 0 (0 sorts by class), got {value}; e.g. --delta 0.1")
    return delta


def split_domains(value: str | None) -> list[str] | None:
    """``--domains a,b`` -> ``["a", "b"]``; absent -> None (the default domains); ``,`` -> ``[]``, which is refused."""
    return None if value is None else [d.strip() for d in value.split(",") if d.strip()]


def check_checkpoint_every(seconds: float) -> None:
    """``--checkpoint-every``: a finite number of seconds >= 0 (0 saves after every batch)."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise InputError(f"--checkpoint-every must be a number of seconds >= 0 (0 saves after every batch), got "
                         f"{seconds:g}; e.g. --checkpoint-every 120")
