"""Run results: one versioned JSON schema for the CLI and Python, and a Markdown table.

Result files are written with ``tta.atomic.write_json``.

Schema ``tta.result`` version 1 (top-level keys)::

    schema, schema_version, created_utc, demo,
    method {name, hparams}, model {name, checkpoint, checkpoint_sha256},
    data {dataset, label, demo, ...}, stream {fingerprint, seed, shift, severity,
    batch_size, n_examples, delta, sorted, num_samples, num_batches, domains, blocks},
    metrics {domain_errors, overall_error, mean_domain_error, ece, batch_errors,
    batch_domains, num_samples, wall_time_s, images_per_s, peak_memory_mb, memory_kind},
    runtime {threads, device, ...}, versions {tta, torch, numpy, python}

Errors and ECE are in percent.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import InputError

SCHEMA = "tta.result"
SCHEMA_VERSION = 1
DEMO_BANNER = "DEMO RUN: embedded scikit-learn digits, NOT CIFAR-10-C; the numbers are not benchmark results"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def build_result(
    *,
    method: str,
    hparams: dict[str, Any],
    model: dict[str, Any],
    data: dict[str, Any],
    stream: dict[str, Any],
    metrics: dict[str, Any],
    runtime: dict[str, Any],
    versions: dict[str, str],
) -> dict[str, Any]:
    """Assemble a result document in the current schema."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "demo": bool(data.get("demo")),
        **({"notice": DEMO_BANNER} if data.get("demo") else {}),
        "method": {"name": method, "hparams": hparams},
        "model": model,
        "data": data,
        "stream": stream,
        "metrics": metrics,
        "runtime": runtime,
        "versions": versions,
    }


def read_json(path: str | Path) -> dict[str, Any]:
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != SCHEMA:
        raise InputError(f"{path} is not a tta result (schema {doc.get('schema')!r}); pass a file written by tta run")
    return doc


def markdown_table(doc: dict[str, Any]) -> str:
    """Error % per domain plus the mean, with a header naming the setting."""
    m = doc["metrics"]
    s = doc["stream"]
    hp = ", ".join(f"{k}={v}" for k, v in doc["method"]["hparams"].items()) or "defaults"
    lines = []
    if doc.get("demo"):
        lines += [f"**{DEMO_BANNER}**", ""]
    lines.append(
        f"{doc['method']['name']} ({hp}) on {doc['data']['label']}: shift {s['shift']}, severity {s['severity']}, "
        f"batch {s['batch_size']}, seed {s['seed']}, stream {s['fingerprint']}"
    )
    lines.append("")
    keys = list(m["domain_errors"])
    lines.append("| domain | " + " | ".join(keys) + " | mean |")
    lines.append("|---|" + "---|" * (len(keys) + 1))
    lines.append(
        f"| error % ({doc['method']['name']}) | " + " | ".join(f"{m['domain_errors'][k]:.1f}" for k in keys)
        + f" | {m['mean_domain_error']:.1f} |"
    )
    lines.append("")
    lines.append(
        f"overall error {m['overall_error']:.2f}% over {m['num_samples']} images, ECE {m['ece']:.2f}%, "
        f"{m['images_per_s']:.0f} images/s, {m['wall_time_s']:.1f} s, peak memory {m['peak_memory_mb']:.0f} MB, "
        f"{doc['runtime']['threads']} thread(s) on {doc['runtime']['device']}"
    )
    return "\n".join(lines)
