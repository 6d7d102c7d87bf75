"""Optional RobustBench integration: import workarounds and checkpoint download."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import CheckpointError

if TYPE_CHECKING:
    from ._zoo import ModelSpec


def import_robustbench() -> ModuleType:
    """Import robustbench 1.1.1 despite its two packaging bugs.

    1. It imports ``pkg_resources`` (gone in setuptools 82); the extra pins setuptools<82.
    2. It imports ``autoattack`` but its dependency ``pyautoattack`` installs the module
       ``pyautoattack``; alias it before the first robustbench import.
    """
    try:
        pyautoattack = importlib.import_module("pyautoattack")
        state = importlib.import_module("pyautoattack.state")
        sys.modules.setdefault("autoattack", pyautoattack)
        sys.modules.setdefault("autoattack.state", state)
    except ImportError:
        pass
    try:
        return importlib.import_module("robustbench")
    except ImportError as exc:
        raise CheckpointError(
            f"robustbench is not usable ({exc}); install it with: pip install 'tta-toolkit[robustbench]'"
        ) from None


def download_checkpoint(spec: "ModelSpec", model_dir: str | Path) -> Path:
    """Fetch ``spec``'s checkpoint into RobustBench's cache layout and return its path."""
    rb = import_robustbench()
    from robustbench.utils import load_model as rb_load  # noqa: PLC0415

    model_dir = Path(model_dir).expanduser()
    try:
        rb_load(spec.robustbench_name, model_dir=str(model_dir), dataset=spec.dataset, threat_model="corruptions")
    except Exception as exc:  # network errors come in many types
        raise CheckpointError(
            f"could not download {spec.robustbench_name} through robustbench {rb.__version__} "
            f"({type(exc).__name__}: {str(exc)[:160]}); check network access or place the file by hand"
        ) from None
    path = model_dir / spec.dataset / "corruptions" / f"{spec.robustbench_name}.pt"
    if not path.is_file():
        raise CheckpointError(f"robustbench reported success but {path} is absent")
    return path
