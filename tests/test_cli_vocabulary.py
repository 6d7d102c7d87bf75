"""One spelling per concept across commands; old spellings still parse, with a warning, and stay out of --help."""
from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from tta.cli.main import cli

# (command path, old spelling, current spelling, value, the other required arguments)
ALIASES = [
    (("corrupt",), "--src", "--data-dir", "x.npy", ["-o", "out"]),
    (("corrupt",), "--out", "--output", "out", ["--data-dir", "x.npy"]),
    (("corrupt",), "--corruptions", "--domains", "fog", ["--data-dir", "x.npy", "-o", "out"]),
    (("corrupt",), "--n-images", "--n-examples", "20", ["--data-dir", "x.npy", "-o", "out"]),
    (("corrupt",), "--workers", "--jobs", "2", ["--data-dir", "x.npy", "-o", "out"]),
    (("train",), "--data", "--data-dir", "d", ["-o", "m.th"]),
    (("train",), "--out", "--output", "m.th", ["--data-dir", "d"]),
    (("train",), "--limit-train", "--n-examples", "100", ["--data-dir", "d", "-o", "m.th"]),
    (("train",), "--no-progress", "--quiet", None, ["--data-dir", "d", "-o", "m.th"]),
    (("report",), "--html", "--output", "site", ["runs.db"]),
    (("run",), "--workers", "--loader-workers", "2", []),
]


def _command(path: tuple[str, ...]) -> click.Command:
    cmd = cli
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("path,old,new,value,rest", ALIASES, ids=[f"{p[0]}{o}" for p, o, *_ in ALIASES])
@pytest.mark.parametrize("form", ["separate", "equals"])
def test_an_old_spelling_parses_as_the_new_one_and_warns(capsys, path, old, new, value, rest, form):
    cmd = _command(path)
    given = [old] if value is None else ([f"{old}={value}"] if form == "equals" else [old, value])
    current = [new] if value is None else [new, value]
    with cmd.make_context(path[-1], given + rest) as ctx:
        old_params = dict(ctx.params)
    warning = capsys.readouterr().err
    assert f"{old} is now {new}" in warning
    with cmd.make_context(path[-1], current + rest) as ctx:
        assert dict(ctx.params) == old_params
    assert "is now" not in capsys.readouterr().err
    helptext = CliRunner().invoke(cli, [*path, "--help"]).output
    assert not re.search(re.escape(old) + r"(?![\w-])", helptext)  # hidden


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(cli)], ids=" ".join)
def test_every_command_help_shows_an_example(path):
    out = CliRunner().invoke(cli, [*path, "--help"]).output
    assert any(line.strip().startswith("tta " + " ".join(path)) for line in out.splitlines()), out


def test_delta_help_says_zero_is_class_sorted():
    out = CliRunner().invoke(cli, ["run", "--help"]).output
    assert "0: class-sorted" in " ".join(out.split()) and "continual@0.1" in out
