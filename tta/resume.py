"""Resumable runs: the state of an interrupted online pass, saved beside its result file.

A long run (hours for WRN-28-10 on a CPU) saves ``<output>.partial.pt`` every few
minutes: the next batch number, the adapter's ``state_dict`` (which holds everything the method
carries across batches: student, teacher, memory, counters, and as extra state the
optimizer moments and the method's random generator), torch's RNG state and the
running counts. Rerunning the same
command resumes from there; the key (stream fingerprint, method, hyperparameters,
model hash) must match, so a changed command starts afresh. The file is written
atomically and removed once the result is written.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .evaluate import Tally
from .results import atomic_write_bytes

log = logging.getLogger(__name__)

FORMAT = "tta.partial-run/2"


def partial_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".partial.pt")


def _canonical(options: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((str(k), repr(v)) for k, v in options.items())


def run_key(fingerprint: str, method: str, hparams: dict[str, Any], model: dict[str, Any]) -> str:
    """What a saved partial run must match: stream, method, hyperparameters, checkpoint and norm layer."""
    norm = (model.get("norm"), _canonical(model.get("norm_options") or {}))
    return repr((fingerprint, method, _canonical(hparams), model.get("checkpoint_sha256"), norm))


def save_partial(path: Path, key: str, next_batch: int, tally: Tally, adapted: nn.Module) -> None:
    state = {
        "format": FORMAT,
        "key": key,
        "next_batch": next_batch,
        "tally": tally.state(),
        "adapter": adapted.state_dict(),
        "rng": torch.get_rng_state(),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    log.info("saved progress at batch %d to %s", next_batch, path)


def load_partial(path: Path, key: str, adapted: nn.Module) -> tuple[int, Tally] | None:
    """Restore ``adapted`` from ``path`` and return (next batch, tally), or None if it does not apply."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unreadable file means: start afresh)
        log.warning("ignoring unreadable progress file %s (%s)", path, exc)
        return None
    if state.get("format") != FORMAT or state.get("key") != key:
        log.warning("ignoring %s: it belongs to a different run (stream, method, settings or model differ)", path)
        return None
    adapted.load_state_dict(state["adapter"])
    torch.set_rng_state(state["rng"])
    return int(state["next_batch"]), Tally.from_state(state["tally"])
