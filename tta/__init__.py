"""tta: test-time adaptation of pretrained classifiers under distribution shift."""
from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from .adapt import adapt
from .errors import CheckpointError, DataError, InputError, TTAError, UnknownNameError
from .methods import METHODS, Adapter, register_method
from .experiment import RunConfig
from .models import MODELS, build_model, load_model
from .run import RunOutcome, run

try:
    __version__ = version("tta")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def list_methods() -> list[str]:
    """Names accepted by ``adapt(model, method=...)``."""
    return list(METHODS)


def list_models() -> list[str]:
    """Names accepted by ``load_model``."""
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
