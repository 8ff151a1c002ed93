"""Every ``--option`` a message of lorank names is an option of some lorank command.

An error that says "use --data FILE" is only help if ``--data`` exists. The hints are collected
from the source text: every string (docstrings, help texts, error messages, f-string parts) of
the CLI and data modules, and the message of every ``LorankError(...)`` anywhere in the package.
Arguments of other programs (``pip install --no-deps ...``) are not hints and are skipped.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import click
import pytest

import lorank
from lorank.cli.main import cli

PACKAGE = Path(lorank.__file__).parent
OPTION = re.compile(r"(?<![\w-])--[a-zA-Z][a-zA-Z0-9-]*")
OTHER_PROGRAMS = re.compile(r"pip install[^;)]*")


@functools.cache
def lorank_options() -> frozenset[str]:
    """Every option string (and its secondary ``--no-...`` form) of every lorank command."""
    ctx = click.Context(cli)
    found = {"--help", "-h", "--version"}

    def walk(command: click.Command) -> None:
        for param in command.params:
            found.update(param.opts)
            found.update(param.secondary_opts)
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name))

    walk(cli)
    return frozenset(found)


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


@functools.cache
def hint_strings() -> tuple[tuple[str, str], ...]:
    """(file:line, text) of every string that may name an option (see module doc)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(PACKAGE.parent)
        if path.parent.name in ("cli", "data"):
            nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Constant)
                     and isinstance(n.value, str)]
            out += [(f"{where}:{n.lineno}", n.value) for n in nodes]
            continue
        for call in ast.walk(tree):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                    and call.func.id == "LorankError"):
                out += [(f"{where}:{call.lineno}", s) for arg in call.args
                        for s in _strings(arg)]
    return tuple(out)


def named_options(text: str) -> list[str]:
    return OPTION.findall(OTHER_PROGRAMS.sub("", text))


def test_the_collector_finds_hints_and_skips_other_programs():
    assert named_options("give the data: --task NAME or --data FILE") == ["--task", "--data"]
    assert named_options("needs: pip install --no-deps part-1") == []
    assert named_options("a-b--c and x --y") == ["--y"]
    hints = [h for _, text in hint_strings() for h in named_options(text)]
    assert {"--data", "--columns", "--label-words", "--data-dir"} <= set(hints)


@pytest.mark.parametrize("option", sorted({opt for _, text in hint_strings()
                                           for opt in named_options(text)}))
def test_every_named_option_exists(option):
    where = [w for w, text in hint_strings() if option in named_options(text)]
    assert option in lorank_options(), f"{option} is named at {', '.join(where)}"
