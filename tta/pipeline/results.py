"""Run results: one versioned JSON schema for the CLI and Python, and a Markdown table.

Result files are written with ``tta.atomic.write_json``.

Schema ``tta.result`` version 1 (top-level keys)::

    schema, schema_version, created_utc, demo,
    method {name, hparams}, model {name, checkpoint, checkpoint_sha256},
    data {dataset, label, demo, ...}, stream {fingerprint, seed, shift, severity,
    batch_size, n_examples, delta, sorted, num_samples, num_batches, domains, blocks},
    metrics {domain_errors, overall_error, mean_domain_error, ece, batch_errors,
    batch_domains, num_samples, wall_time_s, images_per_s, peak_memory_mb, memory_kind,
    collapsed_at {batch, sample} or null, nonfinite_samples},
    runtime {threads, device, ...}, versions {tta, torch, numpy, python}

Errors and ECE are in percent.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import json_safe
from ..errors import InputError
from ..schema import RESULT_SCHEMA, RESULT_SCHEMA_VERSION, check_result

if TYPE_CHECKING:
    from .evaluate import OnlineMetrics
    from .prepare import Prepared

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
        "schema": RESULT_SCHEMA,
        "schema_version": RESULT_SCHEMA_VERSION,
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


def record(prepared: Prepared, metrics: OnlineMetrics, resumed_at_batch: int = 0) -> dict[str, Any]:
    """The result document of a finished run (stage five of ``tta.run``)."""
    from ..runtime import runtime_info, versions  # noqa: PLC0415  (torch; the readers of results do without it)

    doc = build_result(
        method=prepared.config.method,
        hparams=prepared.hparams,
        model=prepared.model_info,
        data={**prepared.source.describe(), "notes": prepared.notes},
        stream=prepared.stream.describe(),
        metrics=metrics.as_dict(),
        runtime={**runtime_info(prepared.device), "config": asdict(prepared.config)},
        versions=versions(),
    )
    doc["stream"]["resumed_at_batch"] = resumed_at_batch
    return doc


def read_json(path: str | Path) -> dict[str, Any]:
    """A result file, checked against the result schema (``tta.schema.RESULT``) before anything uses it."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read {path} as JSON ({exc}); pass a file written by tta run") from None
    if not isinstance(doc, dict) or doc.get("schema") != RESULT_SCHEMA:
        schema = doc.get("schema") if isinstance(doc, dict) else None
        raise InputError(f"{path} is not a tta result (schema {schema!r}); pass a file written by tta run")
    return check_result(doc, str(path))


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2f}%"


def markdown_table(doc: dict[str, Any]) -> str:
    """Error % per domain plus the mean, with a header naming the setting."""
    m = doc["metrics"]
    s = doc["stream"]
    # an option left to the run (None) is shown with the value the run used
    resolved = {"batch_size": s.get("batch_size"), "seed": "run"}  # seed=None: drawn from the run seed
    hp = ", ".join(f"{k}={resolved.get(k) if v is None and k in resolved else v}"
                   for k, v in doc["method"]["hparams"].items()) or "defaults"
    label_order = f", delta {s['delta']}" if s.get("delta") is not None else ""
    label_order += ", class-sorted" if s.get("sorted") else ""
    label_order += f", {s['n_examples']} images per domain" if s.get("n_examples") is not None else ""
    label_order += f", order {s['protocol']}" if s.get("protocol") else ""
    lines = []
    if doc.get("demo"):
        lines += [f"**{DEMO_BANNER}**", ""]
    lines.append(
        f"{doc['method']['name']} ({hp}) on {doc['data']['label']}: shift {s['shift']}, severity {s['severity']}, "
        f"batch {s['batch_size']}{label_order}, seed {s['seed']}, stream {s['fingerprint']}"
    )
    if m.get("collapsed_at"):
        at = m["collapsed_at"]
        lines += ["", f"**collapsed at batch {at['batch']} (sample {at['sample']}): the logits became NaN or infinite; "
                      f"{m.get('nonfinite_samples', 0)} such samples count as errors and are left out of the ECE**"]
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
        f"overall error {m['overall_error']:.2f}% over {m['num_samples']} images, ECE {_pct(m.get('ece'))}, "
        f"{m['images_per_s']:.0f} images/s, {m['wall_time_s']:.1f} s, peak memory {m['peak_memory_mb']:.0f} MB, "
        f"{doc['runtime']['threads']} thread(s) on {doc['runtime']['device']}"
    )
    return "\n".join(lines)


def configuration(method: str, hparams: dict[str, Any], model: dict[str, Any], data: dict[str, Any],
                  fingerprint: str, precision: str = "fp32") -> dict[str, Any]:
    """What makes two results the same experiment (JSON-normalized, so a written result compares equal).

    The autocast precision changes the numbers, so it is part of it; fp32, the default before precision
    existed, is left out so that earlier results keep comparing equal."""
    config = {
        "method": method, "hparams": hparams, "checkpoint_sha256": model.get("checkpoint_sha256"),
        "norm": model.get("norm"), "data": data.get("label"), "stream": fingerprint,
    }
    if precision != "fp32":
        config["precision"] = precision
    return json.loads(json.dumps(json_safe(config)))


def configuration_of_run(prepared: Prepared) -> dict[str, Any]:
    """``configuration`` of a prepared run: it names default outputs and guards existing ones."""
    return configuration(prepared.config.method, prepared.hparams, prepared.model_info, prepared.source.describe(),
                         prepared.stream.fingerprint(), prepared.config.precision)


def configuration_of(doc: dict[str, Any]) -> dict[str, Any]:
    run_config = (doc.get("runtime") or {}).get("config")
    precision = run_config.get("precision", "fp32") if isinstance(run_config, dict) else "fp32"
    return configuration(doc["method"]["name"], doc["method"].get("hparams") or {}, doc.get("model") or {},
                         doc.get("data") or {}, doc["stream"]["fingerprint"], precision)


def check_overwrite(output: str | Path, config: dict[str, Any], overwrite: bool = False) -> str | None:
    """Refuse to replace a result of another configuration unless ``overwrite``; return a note when one is replaced."""
    path = Path(output)
    if not path.exists():
        return None
    try:
        old = configuration_of(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        old = None
    if old == config:
        return f"note: replacing {path}, an earlier result of the same configuration"
    if overwrite:
        return f"note: --overwrite replaces {path}, a result of another configuration"
    what = "a result of another configuration" if old else "a file that is not a tta result"
    differ = [k for k in config if old and old.get(k) != config[k]]
    detail = f" ({', '.join(differ)} differ)" if differ else ""
    raise InputError(f"{path} holds {what}{detail}; pass another --output, or --overwrite to replace it")
