"""Safe checkpoint loading: ``weights_only=True`` always, and one-line errors."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
_PREFIXES = ("module.", "model.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor state dict from ``path`` without unpickling arbitrary objects.

    Accepts a bare state dict or one wrapped under ``state_dict``/``model``, and
    strips a DataParallel ``module.`` prefix.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a downloaded checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain containers, which tta refuses "
            f"to unpickle ({_first_line(exc)}); re-save it as a plain state_dict of tensors"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({_first_line(exc)}); download it again"
        ) from None
    except Exception as exc:  # noqa: BLE001  (a text or random file trips the unpickler anywhere: KeyError 101, ...)
        raise CheckpointError(
            f"checkpoint {path} is not a torch checkpoint ({type(exc).__name__}: {_first_line(exc)}); "
            "pass the .pt/.th file of a state_dict saved with torch.save"
        ) from None
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"checkpoint {path} holds no state_dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint {path} holds no tensors; is it a model checkpoint?")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def load_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | Path,
    optional: tuple[str, ...] = (),
) -> None:
    """Copy ``state`` into ``model`` after checking every key and shape.

    ``optional`` names keys the model may keep at their built-in values when the
    checkpoint lacks them (e.g. input-normalization buffers).
    """
    own = model.state_dict()
    # Checkpoints saved before PyTorch 0.4.1 have no BatchNorm num_batches_tracked.
    missing = [
        k for k in own if k not in state and k not in optional and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} shape mismatches (e.g. {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        )
    bad = [k for k, v in state.items() if k in own and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"checkpoint {source} holds NaN or infinite weights in {len(bad)} tensor(s) (e.g. {', '.join(bad[:3])}); "
            "its training diverged: pass an earlier or another checkpoint"
        )
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not match {type(model).__name__}: {'; '.join(problems)}; "
            "check that --model names the architecture the checkpoint was trained with, and --norm its normalization layer"
        )
    model.load_state_dict({k: v for k, v in state.items()}, strict=False)
