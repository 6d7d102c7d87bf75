"""Typed option declarations: one per option of a method, the single source of its defaults.

A method declares its options once, as a tuple of ``Option`` plus ordered ``When`` rules
that change defaults for a context (dataset, shift, whether the model has BatchNorm, or
the value of another option such as ``stats``). From that declaration derive the
defaults ``tta.adapt(..., dataset=, shift=)`` applies, validation of type and range, the
unknown-option error, the ``tta list methods`` text and the hyperparameters a result records.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import InputError, TTAError

#: the largest finite float32: a larger option value overflows the tensors it scales
FLOAT32_MAX = 3.4028234663852886e38
_TYPE_WORDS = {float: "a number", int: "an integer", bool: "true or false", str: "a string", dict: "a mapping"}


@dataclass(frozen=True)
class Option:
    """One option: its type, generic default, allowed range or choices, and a short help text.

    ``low``/``high`` bound numbers (inclusive unless ``open_low``/``open_high``); numbers must
    be finite unless ``high`` is ``math.inf`` and the value is inf. ``nullable`` admits None
    (e.g. "take it from the source BatchNorm").
    """

    name: str
    type: type
    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    #: a context key (e.g. "run_seed") whose value, when the caller provides it, replaces the generic default
    from_context: str | None = None

    def describe_default(self) -> str:
        return f"{self.default!r}" + (f" (the {self.from_context} when given)" if self.from_context else "")

    def describe_type(self) -> str:
        if self.choices is not None:
            return " | ".join(map(str, self.choices))
        word = self.type.__name__
        if self.low is not None or self.high is not None:
            lo = "" if self.low is None else f"{self.low:g}{'<' if self.open_low else '<='}"
            hi = "" if self.high is None or math.isinf(self.high) else f"{'<' if self.open_high else '<='}{self.high:g}"
            word = f"{lo}{word}{hi}"
        return word + (" | None" if self.nullable else "")

    def check(self, value: Any, method: str) -> Any:
        """The validated (and for numbers, converted) value; InputError naming option and fix otherwise."""
        if value is None and self.nullable:
            return None
        fix = f"pass e.g. {self.name}={self.default!r}" if self.default is not None else f"pass a valid {self.name}"
        where = f"method {method!r}: option {self.name}"
        if self.choices is not None:
            if value not in self.choices:
                raise InputError(f"{where} must be one of {', '.join(map(str, self.choices))}, got {value!r}; "
                                 f"pass one of them")
            return value
        ok_type = (isinstance(value, (int, float)) if self.type is float else isinstance(value, self.type))
        if self.type in (int, float) and isinstance(value, bool):
            ok_type = False
        if not ok_type:
            none = " or None" if self.nullable else ""
            word = _TYPE_WORDS.get(self.type, self.type.__name__)
            raise InputError(f"{where} must be {word}{none}, got {value!r}; {fix}")
        if self.type in (int, float):
            value = self.type(value)
            if math.isnan(value) or (math.isinf(value) and not (self.high is not None and math.isinf(self.high))):
                raise InputError(f"{where} must be a finite number, got {value!r}; {fix}")
            if self.type is float and math.isfinite(value) and abs(value) > FLOAT32_MAX:
                raise InputError(f"{where} is {value!r}, beyond float32 (the precision models run in, at most "
                                 f"{FLOAT32_MAX:.3g}); {fix}")
            too_low = self.low is not None and (value <= self.low if self.open_low else value < self.low)
            too_high = self.high is not None and (value >= self.high if self.open_high else value > self.high)
            if too_low or too_high:
                raise InputError(f"{where} must be {self.describe_type()}, got {value!r}; {fix}")
        return value


@dataclass(frozen=True)
class Derived:
    """A rule value computed from the context, e.g. a learning rate scaled by the batch size.

    ``fn`` gets the context (``dataset``, ``shift``, ``run_batch_size``, ...); ``text`` is what
    ``tta list methods`` shows in its place.
    """

    fn: Callable[[dict[str, Any]], Any]
    text: str

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True)
class When:
    """A default rule: where every condition holds, ``values`` replace the defaults.

    Conditions name a context key (``dataset``, ``shift``, ``batchnorm``, ``run_batch_size``) or
    another option. A value may be ``Derived`` from the context.
    A tuple means any of its values; ``shift`` matches by prefix ("mixed" covers
    "mixed-dirichlet"). A user's explicit value always wins over every rule.
    """

    conditions: dict[str, Any]
    values: dict[str, Any]
    why: str = ""

    def matches(self, context: dict[str, Any]) -> bool:
        for key, want in self.conditions.items():
            have = context.get(key)
            wants = want if isinstance(want, tuple) else (want,)
            if key == "shift":
                if not (isinstance(have, str) and any(have.startswith(w) for w in wants)):
                    return False
            elif have not in wants:
                return False
        return True

    def describe(self) -> str:
        cond = ", ".join(f"{k}={'|'.join(map(str, v)) if isinstance(v, tuple) else v}"
                         for k, v in self.conditions.items())
        vals = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"defaults[{cond}]: {vals}" + (f"  ({self.why})" if self.why else "")


def when(why: str = "", **conditions: Any):
    """``when(dataset="imagenet")(lr=2.5e-4, optimizer="sgd")`` -> a ``When`` rule."""
    def values(**vals: Any) -> When:
        return When(dict(conditions), vals, why)

    return values


@dataclass(frozen=True)
class OptionSet:
    """The declared options of one method or statistics policy, with their default rules."""

    owner: str
    options: tuple[Option, ...] = ()
    rules: tuple[When, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        for rule in self.rules:
            bad = set(rule.values) - set(names)
            if bad:
                raise ValueError(f"{self.owner}: default rule sets undeclared option(s) {sorted(bad)}")

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.options]

    def generic(self, context: dict[str, Any] | None = None) -> dict[str, Any]:
        context = context or {}
        return {o.name: context[o.from_context] if context.get(o.from_context) is not None else o.default
                for o in self.options}

    def defaults(self, context: dict[str, Any], given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults for ``context`` (dataset, shift, ...), with ``given`` visible to rule conditions."""
        given = given or {}
        values = self.generic(context)
        for rule in self.rules:
            if rule.matches({**context, **values, **given}):
                values.update({k: v.fn(context) if isinstance(v, Derived) else v for k, v in rule.values.items()})
        return values

    def resolve(self, given: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """Defaults for the context, overridden by ``given``, all validated; unknown names raise."""
        unknown = sorted(set(given) - set(self.names))
        if unknown:
            raise TTAError(f"method {self.owner!r} has no option {', '.join(unknown)}; "
                           f"valid options: {', '.join(self.names) or 'none'}")
        values = {**self.defaults(context, given), **given}
        return {o.name: o.check(values[o.name], self.owner) for o in self.options}

    def describe(self) -> list[str]:
        """Lines for ``tta list``: each option with type and generic default, then the rules."""
        lines = [f"{o.name}: {o.describe_type()} = {o.describe_default()}" + (f"  {o.help}" if o.help else "")
                 for o in self.options]
        return lines + [r.describe() for r in self.rules]
