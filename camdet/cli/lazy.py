"""Command groups whose commands are imported only when one of them runs.

The project's scripts (``camdet detector train``, ``camdet perf soak``, ...) are each a
module with its own small typer ``app`` (``python -m`` runs it); many import torch, DALI
or tritonclient at their top. A group made by :func:`lazy_group` names them by module, so
``camdet --help`` and a group's listing import none of them: the listing shows the
one-line help given here, and the command is imported when it runs (or shows its
``--help``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

import click
import typer
import typer.main
from typer.core import TyperGroup

from camdet.cli.extras import missing_extra


@dataclass(frozen=True)
class Script:
    """One subcommand: the module whose typer ``app`` it is, and its line in the listing.

    Attributes:
        module: Importable module name, e.g. ``"camdet.detector.train"``.
        help: One line shown by the group's ``--help``.
    """

    module: str
    help: str

    def command(self, name: str) -> click.Command:
        """Import the module and turn its ``app`` into the click command ``name``."""
        command = typer.main.get_command(importlib.import_module(self.module).app)
        command.name = name
        return command


class LazyGroup(TyperGroup):
    """A typer group whose :attr:`scripts` are imported by :meth:`resolve_command` only."""

    scripts: ClassVar[dict[str, Script]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The group's own commands, then its scripts in the order given."""
        return [*super().list_commands(ctx), *self.scripts]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A script as a placeholder (name and help, for listings), else the real command."""
        script = self.scripts.get(cmd_name)
        if script is None:
            return super().get_command(ctx, cmd_name)
        return click.Command(cmd_name, help=script.help, short_help=script.help)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The command to run: a script's module is imported here.

        A script of the ``gpu`` extra (torch) on a CPU install ends here with one line
        that names the extra, not an import traceback.
        """
        name, command, rest = super().resolve_command(ctx, args)
        if name in self.scripts:
            try:
                command = self.scripts[name].command(name)
            except ImportError as error:
                missing = missing_extra(error, f"{ctx.command_path} {name}")
                if missing is None:
                    raise
                typer.echo(f"Error: {missing}", err=True)
                raise typer.Exit(1) from error
        return name, command, rest


def lazy_group(scripts: dict[str, Script], **options: Any) -> typer.Typer:
    """A typer app (mount it with ``add_typer``) whose commands are ``scripts``, by name."""
    group = type("LazyGroup", (LazyGroup,), {"scripts": scripts})
    return typer.Typer(cls=group, no_args_is_help=True, **options)
