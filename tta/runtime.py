"""CPU runtime settings for a run, and the versions recorded with every result."""
from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
import torch

from .errors import InputError

#: ``tta run`` uses one torch thread unless told otherwise: on 2-core machines
#: torch's default of 2 threads ran up to 7x slower whenever other work shared the CPU.
DEFAULT_THREADS = 1


def configure_threads(threads: int | None = DEFAULT_THREADS) -> int:
    """Set torch's intra-op threads (``None`` keeps torch's default) and return the count in use."""
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def prefers_channels_last(model: torch.nn.Module) -> bool:
    """Whether ``model`` runs faster in channels_last than NCHW on the CPU.

    Measured for ResNet-20 at batch 200, 1 thread (CPU time per forward): BatchNorm
    0.34 s channels_last vs 0.53 s NCHW, but GroupNorm 0.68 s vs 0.45 s and BCN 0.49 s
    vs 0.43 s, because PyTorch's CPU group norm has no fast channels_last kernel
    (``benchmarks/bench_memory_format.py`` repeats the comparison). Layers can opt out with a class attribute ``prefers_nchw = True``.
    """
    slow = (torch.nn.GroupNorm, torch.nn.InstanceNorm2d)
    return not any(isinstance(m, slow) or getattr(type(m), "prefers_nchw", False) for m in model.modules())


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; pass --device cpu, cuda or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is visible; pass --device cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps was asked for but this machine has no Apple GPU (MPS); pass --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {name} is not supported; pass --device cpu, cuda, mps or auto")
    return device


def versions() -> dict[str, str]:
    """Versions of tta, torch, numpy and Python."""
    from . import __version__ as tta_version  # noqa: PLC0415  (one lookup of the installed distribution)

    return {"tta": tta_version, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def runtime_info(device: torch.device) -> dict[str, Any]:
    """Threads, device and host facts stored with a result."""
    info: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
