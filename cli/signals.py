"""SIGTERM handled as Ctrl-C, for commands whose KeyboardInterrupt path stops cleanly and says how to resume."""
from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


def _interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt; the previous handler is restored after.

    Only the main thread may set handlers: elsewhere the block runs with SIGTERM as it was.
    """
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
