"""Command names reserved for features that have not landed yet."""
from __future__ import annotations

import click

from tta.errors import NotImplementedYet

_PENDING = {
    "bench": "run the performance benchmarks",
}


def _reserved(name: str, help_text: str) -> click.Command:
    @click.command(name, help=f"{help_text} (not implemented yet).", context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args: tuple[str, ...]) -> None:
        raise NotImplementedYet(f"`tta {name}` is not implemented yet in tta; nothing was run")

    return cmd


RESERVED = [_reserved(n, h) for n, h in _PENDING.items()]
