"""Parsing of repeatable ``KEY=VALUE`` command-line options."""
from __future__ import annotations

import json
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
    """``--delta``: a number, ``default`` (the dataset's protocol value) or absent."""
    if value is None or value == "default":
        return value
    try:
        return float(value)
    except ValueError:
        raise InputError(f"--delta expects a number such as 0.1, got {value!r}") from None
