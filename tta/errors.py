"""User-facing errors. Each message names the problem and the fix."""
from __future__ import annotations


class TTAError(Exception):
    """Base class for every error tta raises on bad input or missing resources."""


class CheckpointError(TTAError):
    """A checkpoint is missing, corrupt or does not match the architecture."""


class UnknownNameError(TTAError, KeyError):
    """A name (method, model, shift, corruption, norm) is not in its registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputError(TTAError, ValueError):
    """An input batch has the wrong shape, dtype or values."""


class DataError(TTAError):
    """A dataset file or folder is missing, truncated or malformed."""



class WriteError(InputError):
    """A file could not be written (read-only folder, full disk, name too long); the message says which and why."""
