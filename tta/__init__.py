"""tta: test-time adaptation of pretrained classifiers under distribution shift."""
from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, metadata, version

from typing import Any

from .errors import CheckpointError, DataError, InputError, TTAError, UnknownNameError

#: the name tta is installed under (``pip install tta-toolkit``); the import name and the command stay ``tta``.
#: The index's ``tta`` is an unrelated project.
DISTRIBUTION = "tta-toolkit"


def _installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    try:  # an editable install made before the distribution was renamed, but only if it is this project
        if (metadata("tta")["Summary"] or "").startswith("Test-time adaptation"):
            return version("tta")
    except PackageNotFoundError:
        pass
    return "0.0.0+unknown"  # running from a source tree without install


__version__ = _installed_version()

logging.getLogger(__name__).addHandler(logging.NullHandler())


#: public names imported on first use, so `import tta` (and `tta --help`) does not load torch.
#: No submodule may share a name with an entry: importing it would shadow the entry.
_LAZY = {
    "adapt": ".adaptation", "Adapter": ".methods", "METHODS": ".methods", "register_method": ".methods",
    "MODELS": ".models", "build_model": ".models", "load_model": ".models",
    "RunConfig": ".pipeline.config", "run": ".pipeline.orchestrator", "RunOutcome": ".pipeline.orchestrator",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tta' has no attribute {name!r}")


def list_methods() -> list[str]:
    """Names accepted by ``adapt(model, method=...)``."""
    from .methods import METHODS  # noqa: PLC0415

    return list(METHODS)


def list_models() -> list[str]:
    """Names accepted by ``load_model``."""
    from .models import MODELS  # noqa: PLC0415

    return list(MODELS)


__all__ = [
    "Adapter",
    "CheckpointError",
    "DataError",
    "InputError",
    "RunConfig",
    "RunOutcome",
    "TTAError",
    "UnknownNameError",
    "__version__",
    "adapt",
    "build_model",
    "list_methods",
    "list_models",
    "load_model",
    "register_method",
    "run",
]
