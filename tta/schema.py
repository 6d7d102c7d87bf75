"""Schemas of the files tta reads but did not just write, and one checker for all of them.

Result files, stores, ``tta corrupt`` manifests, training records and order files come
from disk, where anything may have edited them. Each reader checks what it loaded
against a schema here before using it, so a wrong type or a missing field becomes one
line that names the file, the field and the fix (``InputError``/``DataError``), not a
``KeyError`` or ``TypeError`` deep in a report or a run.

A schema is a plain value:

- a type or tuple of types (``str``, ``dict``): ``isinstance``, with ``bool`` never an int;
- ``NUMBER`` / ``INT``: a finite real number / an integer (not ``bool``);
- a dict ``{"key": schema, "key?": schema}``: an object with those keys ("?": optional;
  other keys are allowed);
- ``ListOf(schema)`` / ``MapOf(schema)``: a list / an object whose every item matches;
- ``Maybe(schema)``: ``None`` or the schema;
- a ``Check(describe, predicate)``: anything else a field must satisfy.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable

from .errors import InputError


@dataclass(frozen=True)
class Check:
    """A field that must satisfy ``ok``; ``want`` says what it must be ("an integer >= 0")."""

    want: str
    ok: Callable[[Any], bool]


@dataclass(frozen=True)
class ListOf:
    item: Any
    min_len: int = 0


@dataclass(frozen=True)
class MapOf:
    value: Any


@dataclass(frozen=True)
class Maybe:
    inner: Any


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


NUMBER = Check("a finite number", _is_number)
INT = Check("an integer", _is_int)
TEXT = Check("a string", lambda v: isinstance(v, str))
OBJECT = Check("an object", lambda v: isinstance(v, dict))


def _show(value: Any) -> str:
    """A short, inert rendering of a bad value: markup or control characters are not echoed."""
    text = repr(value)
    if isinstance(value, str) and any(c in value for c in "<>&\x1b\r\n"):
        return f"a string of {len(value)} characters"
    return text if len(text) <= 60 else text[:57] + "..."


def _want(schema: Any) -> str:
    if isinstance(schema, Check):
        return schema.want
    if isinstance(schema, dict):
        return "an object"
    if isinstance(schema, ListOf):
        return "a list" + (" (not empty)" if schema.min_len else "")
    if isinstance(schema, MapOf):
        return "an object"
    if isinstance(schema, Maybe):
        return f"null or {_want(schema.inner)}"
    names = {str: "a string", dict: "an object", list: "a list", int: "an integer", float: "a number", bool: "true/false"}
    types = schema if isinstance(schema, tuple) else (schema,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def problem(value: Any, schema: Any, where: str = "") -> str | None:
    """The first way ``value`` breaks ``schema`` ("metrics.domain_errors.fog is 'x', not a finite number"), or None."""
    name = where or "the document"
    if isinstance(schema, Maybe):
        return None if value is None else problem(value, schema.inner, where)
    if isinstance(schema, Check):
        return None if schema.ok(value) else f"{name} is {_show(value)}, not {schema.want}"
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return f"{name} is {_show(value)}, not an object"
        for key, sub in schema.items():
            optional = key.endswith("?")
            key = key.rstrip("?")
            path = f"{where}.{key}" if where else key
            if key not in value:
                if optional:
                    continue
                return f"{path} is missing"
            found = problem(value[key], sub, path)
            if found:
                return found
        return None
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            return f"{name} is {_show(value)}, not a list"
        if len(value) < schema.min_len:
            return f"{name} is empty"
        for i, item in enumerate(value):
            found = problem(item, schema.item, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            return f"{name} is {_show(value)}, not an object"
        for key, item in value.items():
            found = problem(item, schema.value, f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    types = schema if isinstance(schema, tuple) else (schema,)
    if isinstance(value, bool) and bool not in types:
        return f"{name} is {_show(value)}, not {_want(schema)}"
    if not isinstance(value, types):
        return f"{name} is {_show(value)}, not {_want(schema)}"
    return None


def check(value: Any, schema: Any, *, what: str, fix: str, error: type[Exception] = InputError) -> Any:
    """``value`` when it matches ``schema``; else raise ``error("<what>: <problem>; <fix>")``."""
    found = problem(value, schema)
    if found:
        raise error(f"{what}: {found}; {fix}")
    return value


# -- the schemas ------------------------------------------------------------------------------------------

#: the name and the newest version of the result document (``tta.pipeline.results`` writes them)
RESULT_SCHEMA = "tta.result"
RESULT_SCHEMA_VERSION = 1

#: a ``tta.result`` document, as far as tta's readers (leaderboard, report, store, markdown) use it
RESULT = {
    "schema": TEXT,
    "schema_version": INT,
    "method": {"name": TEXT, "hparams?": OBJECT},
    "model": {"name": TEXT, "checkpoint_sha256?": Maybe(TEXT), "norm?": Maybe(TEXT), "norm_options?": Maybe(OBJECT)},
    "data": {"dataset": TEXT, "label": TEXT},
    "stream": {
        "fingerprint": TEXT, "shift": TEXT, "seed": Maybe(INT), "batch_size": INT,
        "severity?": Maybe(INT), "domains?": ListOf({"name": TEXT, "severity?": Maybe(INT)}),
    },
    "metrics": {
        "domain_errors": MapOf(NUMBER), "domain_keys?": ListOf(TEXT), "mean_domain_error": NUMBER, "overall_error?": Maybe(NUMBER),
        "ece?": Maybe(NUMBER), "images_per_s?": Maybe(NUMBER), "num_samples?": INT,
        "wall_time_s?": Maybe(NUMBER), "peak_memory_mb?": Maybe(NUMBER),
        "batch_errors?": ListOf(Maybe(NUMBER)), "batch_domains?": ListOf(INT),
    },
    "runtime?": {"config?": Maybe(OBJECT)},
    "versions?": {"tta?": TEXT},
}

#: the JSON ``tta train`` leaves beside a checkpoint, as far as ``tta run`` reads it (the norm to rebuild)
TRAINING_RECORD = {"model": TEXT, "norm": TEXT, "norm_options?": Maybe(OBJECT)}

#: what ``tta store import`` needs beyond a readable result: the tta version is part of a cell's id
IMPORTABLE = {"versions": {"tta": TEXT}, "runtime?": {"config?": Maybe(OBJECT)}}


def result_problem(doc: Any) -> str | None:
    """Why ``doc`` is not a usable result document (a newer schema, wrong types, inconsistent fields), or None.

    The one home of these checks: files, stores, ``tta store import``, the leaderboard and the report all use it.
    """
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if _is_int(version) and version > RESULT_SCHEMA_VERSION:
        return f"schema_version {version} is newer than this tta reads ({RESULT_SCHEMA_VERSION}): upgrade tta to read it"
    found = problem(doc, RESULT)
    if found:
        return found
    metrics = doc["metrics"]
    errors = metrics["domain_errors"]
    if not errors:
        return "metrics.domain_errors is empty"
    domains = doc["stream"].get("domains")
    if domains is not None:
        names = [d["name"] for d in domains]
        same = len({d.get("severity") for d in domains}) == 1 and len(set(names)) == len(names)
        keys = names if same else [d["name"] if d.get("severity") is None else f"{d['name']}@{d['severity']}"
                                   for d in domains]  # as tta.pipeline.evaluate names them
        if set(errors) != set(keys):
            return f"metrics.domain_errors has domains {_names(errors)} but the stream has {_names(keys)}"
    keys = metrics.get("domain_keys") or list(errors)
    if set(keys) != set(errors):
        return f"metrics.domain_keys {_names(keys)} are not the domains of metrics.domain_errors {_names(errors)}"
    mean = statistics.fmean(errors[k] for k in keys)
    if abs(mean - metrics["mean_domain_error"]) > 1e-6 * max(1.0, abs(mean)):
        return f"metrics.mean_domain_error is {metrics['mean_domain_error']!r} but its domain errors average {mean:.6g}"
    return None


def _names(items: Any) -> str:
    """Domain names for a message, inert (markup is not echoed) and short."""
    text = ", ".join(sorted(map(str, items)))
    return _show(text) if any(c in text for c in "<>&\x1b\r\n") else text[:120]


def check_result(doc: Any, where: str) -> dict[str, Any]:
    """``doc`` when it is a usable result; else ``InputError`` naming ``where`` and the field."""
    found = result_problem(doc)
    if found:
        raise InputError(f"{where}: {found}; pass a result written by `tta run` (or rerun it)")
    return doc
