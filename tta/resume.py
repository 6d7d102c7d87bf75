"""Resumable runs: the state of an interrupted online pass, saved beside its result file.

A long run (hours for WRN-28-10 on a CPU) saves ``<output>.partial.pt`` every few
minutes: the next batch number, the adapter's ``state_dict`` (and optimizer state,
if it has one), torch's RNG state and the running counts. Rerunning the same
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
from .atomic import write_bytes

log = logging.getLogger(__name__)

FORMAT = "tta.partial-run/1"


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
        "optimizer": adapted.optimizer.state_dict() if hasattr(adapted, "optimizer") else None,
        "rng": torch.get_rng_state(),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(path, buf.getvalue())
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
    if state["optimizer"] is not None and hasattr(adapted, "optimizer"):
        adapted.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return int(state["next_batch"]), Tally.from_state(state["tally"])


def resume_point(path: Path | None, key: str, adapted: nn.Module, *, fresh: bool = False) -> tuple[int, Tally | None]:
    """Where a run starts: (next batch, saved tally) from ``path`` when it applies, else (0, None).

    ``fresh`` ignores saved progress; a file of another run (different key) is ignored too.
    """
    if path is None or fresh:
        return 0, None
    resumed = load_partial(path, key, adapted)
    return resumed if resumed else (0, None)


def discard_partial(path: Path | None) -> None:
    """Remove the progress file of a run whose result has been written."""
    if path is not None:
        path.unlink(missing_ok=True)
