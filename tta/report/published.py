"""Published reference numbers (``benchmarks/published_reference.json``), matched to measured settings.

Every entry carries its source (repository, file, commit, table); the report shows
them beside measured rows only where dataset, model, shift and severity agree, and
always marked as published.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError

#: the file in a source checkout; installed packages pass ``--published`` explicitly
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "published_reference.json"


def load_published(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The entries of a published-numbers file; ``None`` reads the source checkout's, or nothing when absent."""
    if path is None:
        if not DEFAULT_FILE.is_file():
            return []
        path = DEFAULT_FILE
    path = Path(path).expanduser()
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read published numbers from {path} ({exc}); pass a tta.published JSON file") from None
    if doc.get("schema") != "tta.published":
        raise InputError(f"{path} is not a tta.published file (schema {doc.get('schema')!r})")
    for e in doc["entries"]:
        if not e.get("source"):
            raise InputError(f"{path}: entry {e.get('method')} {e.get('dataset')} has no source; every number needs one")
    return doc["entries"]


def matching(entries: list[dict[str, Any]], doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Entries for the setting of the result ``doc``: same dataset, model, shift (no label correlation) and severity."""
    s = doc["stream"]
    if doc["data"].get("demo") or s.get("delta") is not None or s.get("sorted"):
        return []
    return [e for e in entries
            if e["dataset"] == doc["data"].get("dataset") and e["model"] == doc["model"].get("name")
            and e["shift"] == s.get("shift") and e["severity"] == s.get("severity")
            and doc["model"].get("norm") in (None, "bn")]


def source_text(entry: dict[str, Any]) -> str:
    src = entry["source"]
    if "paper" in src:
        return f"{src['paper']}, {src.get('table', '')}".strip(", ")
    return f"{src['repository']} {src['file']} @ {src['commit'][:10]} ({src.get('table', '')})"
