"""One short label per method variant: the method's name plus only what differs from its defaults.

``lame + unmix-tns`` (a composed statistics policy), ``tbn prior=0`` (a policy option), ``tent lr=0.0001``.
The same variant gets the same label in every setting, although some defaults depend on the setting
(UnMix-TNS's K on mixed domains): a value is compared with the default resolved for the run's own
dataset and shift. The full resolved options stay in the provenance; the label only tells rows apart.
"""
from __future__ import annotations

import json
from typing import Any


#: options the run fills in (its seed, the data a method estimates from), not part of what a variant is
_RUN_GIVEN = ("seed", "source_data")


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ",".join(_value(x) for x in v)
    if isinstance(v, dict):  # never braces in a label: nested options are flattened by the caller
        return ",".join(f"{k}={_value(x)}" for k, x in sorted(v.items()))
    return str(v)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _defaults(method: str, given: dict[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
    """``method``'s options resolved from ``given`` alone in ``context``; None for a method tta does not know."""
    try:
        from ..methods import get_method  # noqa: PLC0415  (labels of unknown methods still work without it)

        return dict(get_method(method).resolve(given, context))
    except Exception:  # noqa: BLE001  an unknown or renamed method, or options it rejects: no defaults to drop
        return None


def _parts(changed: dict[str, Any]) -> list[str]:
    out = []
    for k, v in sorted(changed.items()):
        if isinstance(v, dict):
            out += [f"{kk}={_value(vv)}" for kk, vv in sorted(v.items())]
        else:
            out.append(f"{k}={_value(v)}")
    return out


def variant_label(method: str, hparams: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                  context: dict[str, Any] | None = None) -> str:
    """The short label of ``method`` run with resolved ``hparams`` (and, when recorded, the asked ``options``).

    ``context`` holds ``dataset``/``shift``/``run_batch_size`` for the method's defaults. Without
    known defaults the asked options are shown as asked (still flattened, never as a dict).
    """
    context = context or {}
    hparams = dict(hparams or {})
    base = _defaults(method, {}, context)
    if base is None:
        changed = {k: v for k, v in (options or {}).items() if k not in _RUN_GIVEN}
        stats = changed.pop("stats", None)
    else:
        source = dict(options) if options is not None else hparams
        stats = source.get("stats") if "stats" in source and not _same(source.get("stats"), base.get("stats")) else None
        ref = _defaults(method, {"stats": stats}, context) if stats is not None else base
        ref = ref or base
        changed = {}
        for k, v in source.items():
            if k == "stats" or k not in ref or k in _RUN_GIVEN:
                continue
            if isinstance(v, dict) and isinstance(ref.get(k), dict):
                sub = {kk: vv for kk, vv in v.items()
                       if kk not in _RUN_GIVEN and kk in ref[k] and not _same(vv, ref[k][kk])}
                if sub:
                    changed[k] = sub
            elif not _same(v, ref[k]):
                changed[k] = v
    head = method + (f" + {_value(stats)}" if stats is not None else "")
    return " ".join([head, *_parts(changed)])


value_text = _value

__all__ = ["value_text", "variant_label"]
