"""Default names of result files: readable, and distinct for every result-determining configuration.

``tta run`` without ``--output`` writes ``tta-results/<name>.json`` where ``<name>`` is
``<dataset>-<model>-<method>-<shift>[-d<δ>|-sorted][-n<images>]-s<seed>-<digest>``: the readable part says what
ran, and ``<digest>`` (8 hex digits) is a hash of the result-determining configuration, the same mapping
``results.check_overwrite`` compares (``results.configuration``). Two runs that could give different
numbers therefore never share a default name, and the same command always finds its own file again (to resume
or to replace it).
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

#: the folder of default result names, relative to the working directory
DEFAULT_RESULTS_DIR = "tta-results"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def config_digest(configuration: dict[str, Any], length: int = 8) -> str:
    """A short hex hash of a result-determining configuration (key order does not matter)."""
    text = json.dumps(configuration, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _part(value: Any) -> str:
    return _UNSAFE.sub("_", str(value)).strip("._-") or "x"


def default_result_name(*, dataset: str, model: str | None, method: str, shift: str, stream: dict[str, Any],
                        configuration: dict[str, Any]) -> str:
    """``<dataset>-<model>-<method>-<shift>[-d<δ>|-sorted][-n<N>]-s<seed>-<digest>.json`` for one run.

    ``stream`` is the stream's description (its resolved ``delta``, ``sorted``, ``n_examples``, ``seed``)."""
    parts = [dataset, *([model] if model else []), method, shift]
    if stream.get("delta") is not None:
        parts.append(f"d{stream['delta']:g}" if isinstance(stream["delta"], (int, float)) else f"d{stream['delta']}")
    if stream.get("sorted"):
        parts.append("sorted")
    if stream.get("n_examples") is not None:
        parts.append(f"n{stream['n_examples']}")
    parts.append(f"s{stream.get('seed')}")
    return "-".join(_part(p) for p in parts) + f"-{config_digest(configuration)}.json"
