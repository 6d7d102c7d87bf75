"""A sweep cell's identity and the command that reruns it.

The content id of a cell is a hash of what determines its result: the resolved run
configuration (the dataset ``auto`` resolved, the checkpoint named by its sha256
rather than its path, machine-only settings such as threads, device and folders
left out), the tta version and the stream fingerprint. The same cell on another
machine, or imported from a ``tta run`` result file, has the same id.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass
from typing import Any

from ..atomic import json_safe
from ..pipeline.config import RunConfig

#: settings that change where or how fast a run happens, not its result
MACHINE_FIELDS = ("data_dir", "download", "threads", "device", "workers", "frost_dir")

_FLAGS = {  # RunConfig field -> `tta run` flag, in the order they are printed
    "method": "--method", "shift": "--shift", "dataset": "--dataset", "data_dir": "--data-dir", "model": "--model",
    "checkpoint": "--checkpoint", "norm": "--norm", "domains": "--domains", "severity": "--severity",
    "batch_size": "--batch-size", "n_examples": "--n-examples", "seed": "--seed", "delta": "--delta",
    "order_file": "--order", "threads": "--threads", "device": "--device", "workers": "--workers",
    "imagenet_subset": "--imagenet-subset", "frost_dir": "--frost-dir", "protocol": "--protocol",
    "precision": "--precision",
}


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: its configuration, content id and the command that reruns it."""

    config: RunConfig
    id: str
    dataset: str
    fingerprint: str

    @property
    def command(self) -> str:
        return rerun_command(self.config)

    def label(self) -> str:
        c = self.config
        opts = ",".join(f"{k}={v}" for k, v in sorted(c.options.items()))
        shift = c.shift + (f"@{c.delta}" if c.delta is not None else "") + ("@sorted" if c.sort_labels else "")
        return f"{c.method}{'[' + opts + ']' if opts else ''} {shift} s{c.seed}"


def identity(config: RunConfig | dict[str, Any], dataset: str, checkpoint_sha256: str | None) -> dict[str, Any]:
    """The parts of a configuration that determine its result, JSON-safe and canonical."""
    cfg = asdict(config) if isinstance(config, RunConfig) else dict(config)
    for key in MACHINE_FIELDS:
        cfg.pop(key, None)
    cfg["dataset"] = dataset
    if cfg.get("precision") == "fp32":  # the default before precision existed: earlier cells keep their ids
        cfg.pop("precision")
    if cfg.get("checkpoint"):
        cfg["checkpoint"] = checkpoint_sha256
    return json_safe(cfg)


def cell_id(config: RunConfig | dict[str, Any], *, dataset: str, fingerprint: str, checkpoint_sha256: str | None,
            version: str) -> str:
    """The content id: sha256 of the result-determining configuration, the tta version and the stream fingerprint."""
    payload = {"config": identity(config, dataset, checkpoint_sha256), "tta": version, "stream": fingerprint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def rerun_command(config: RunConfig | dict[str, Any]) -> str:
    """The ``tta run`` command line that repeats this configuration."""
    cfg = asdict(config) if isinstance(config, RunConfig) else dict(config)
    defaults = asdict(RunConfig())
    parts = ["tta", "run"]
    for key, flag in _FLAGS.items():
        value = cfg.get(key)
        if value is None or (value == defaults.get(key) and key not in ("method", "shift", "seed")):
            continue
        if key == "domains":
            value = ",".join(value)
        parts += [flag, str(value)]
    if cfg.get("sort_labels"):
        parts.append("--sorted")
    if cfg.get("download"):
        parts.append("--download")
    for key, value in sorted((cfg.get("options") or {}).items()):
        parts += ["-O", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    for key, value in sorted((cfg.get("norm_options") or {}).items()):
        parts += ["--norm-option", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return shlex.join(parts)
