"""Templates for every page and table tta writes: values are escaped by the template engine, never by hand.

Result files, stores and option values are untrusted (a seed or a file name may hold ``<script>``), so
escaping is not left to each call site: HTML templates autoescape, and the Markdown environment runs every
``{{ value }}`` through ``md_escape`` (HTML in Markdown renders as HTML). Templates live in
``tta/report/templates``; text that must stay markup is written in the template itself.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_escape(value: Any) -> str:
    """``value`` as literal Markdown text in a table cell: HTML characters as entities, Markdown marks escaped."""
    if value is None:
        return ""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"\s+", " ", text)  # no newline can end a table row early


def _fmt(x: Any, spec: str = ".1f", missing: str = "–") -> str:
    if x is None or (isinstance(x, float) and x != x):
        return missing
    text = format(x, spec)
    if re.fullmatch(r"[+-]?0(\.0*)?", text):  # no "-0" for a value that rounds to zero
        text = format(0.0, spec)
    return text


@functools.lru_cache(maxsize=None)
def environment(kind: str) -> jinja2.Environment:
    """``"html"`` (autoescape on) or ``"md"`` (every expression through ``md_escape``)."""
    loader = jinja2.FileSystemLoader(str(TEMPLATES))
    if kind == "html":
        env = jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True,
                                 undefined=jinja2.StrictUndefined)
    elif kind == "md":
        env = jinja2.Environment(loader=loader, autoescape=False, finalize=md_escape, trim_blocks=True,
                                 lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    else:
        raise ValueError(kind)
    env.filters["fmt"] = _fmt
    return env


def render(template: str, **context: Any) -> str:
    """Render ``template`` (``*.html.j2``/``*.svg.j2`` escaped as HTML, ``*.md.j2`` as Markdown)."""
    kind = "md" if template.endswith(".md.j2") else "html"
    return environment(kind).get_template(template).render(**context)


__all__ = ["md_escape", "render"]
