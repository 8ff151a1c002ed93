"""Entry point of the ``lorank`` command.

Subcommands live in their own modules under :mod:`lorank.cli` and are imported lazily, only when
invoked, so ``lorank prescribe`` never pays for importing torch. Register a new subcommand by
adding ``"name": "module"`` to :data:`COMMANDS`; the module must define a ``click.Command`` called
``command``.

Error contract: a :class:`~lorank.errors.LorankError` or a click usage error becomes one line on
stderr (``lorank: error: ...``) and exit status 2; no traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from lorank.errors import LorankError

#: click >= 8.2 raises this (a UsageError) when a group is called without a subcommand.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", click.exceptions.UsageError)

#: subcommand name -> module under ``lorank.cli`` defining ``command``.
COMMANDS: dict[str, str] = {
    "prescribe": "prescribe",
    "report": "report",
    "reproduce": "reproduce",
    "sweep": "sweep",
    "runs": "runs",
    "head": "zeroshot",
    "zeroshot": "zeroshot",  # the old name of `head` (kept: scripts and docs use it)
    "data": "data",
    "ntk": "ntk",
    "train": "train",
    "cstar": "cstar",
    "pl": "pl",
    "predict-rank": "predict_rank",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"lorank.cli.{COMMANDS[name]}")
        return module.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lorank")
def cli() -> None:
    """lorank: which LoRA rank do I need? Theory you can compute, NTK experiments you can run."""


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2."""
    click.echo(f"lorank: error: {' '.join(str(message).split())}", err=True)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors exit 2 with one line, everything else propagates."""
    try:
        rv = cli.main(args=argv, prog_name="lorank", standalone_mode=False)
    except LorankError as exc:
        fail(str(exc))
    except _NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        fail(exc.format_message())
    except click.exceptions.Abort:
        fail("aborted")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(rv, int) and rv:
        sys.exit(rv)


if __name__ == "__main__":
    main()
