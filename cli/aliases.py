"""Old spellings of options, kept as hidden aliases that warn: one name per concept across all commands.

The vocabulary: ``--output/-o`` for what a command writes, ``--data-dir`` for the data it reads, ``--domains`` for
corruptions, ``--severity`` for severity levels (a comma list where a command takes several), ``--n-examples`` for
how many images, ``--jobs/-j`` for processes working in parallel, ``--loader-workers`` for DataLoader workers,
``--quiet/-q`` for no progress bar.
"""
from __future__ import annotations

import click


def rewrite(args: list[str], aliases: dict[str, str], command: str) -> list[str]:
    """``args`` with each old spelling (``--out x`` or ``--out=x``) replaced by its new one, warning once per name."""
    out = []
    warned = set()
    for arg in args:
        if arg == "--":
            out += args[len(out):]
            break
        name, eq, value = arg.partition("=")
        if name in aliases:
            if name not in warned:
                click.echo(f"warning: tta {command} {name} is now {aliases[name]}; the old spelling will go away",
                           err=True)
                warned.add(name)
            arg = aliases[name] + eq + value
        out.append(arg)
    return out


class AliasCommand(click.Command):
    """A command whose ``aliases`` (old spelling -> current one) still parse, with a warning, and stay out of --help."""

    aliases: dict[str, str] = {}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite(args, self.aliases, self.name or ""))


def with_aliases(aliases: dict[str, str]) -> type[AliasCommand]:
    """An ``AliasCommand`` subclass for ``@click.command(cls=...)``."""
    return type("Aliased", (AliasCommand,), {"aliases": dict(aliases)})
