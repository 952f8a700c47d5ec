"""``camdet bench``: the typer face of :mod:`camdet.perf.bench`.

The options are defined once, by the bench's argparse parser (so ``python -m
camdet.perf.bench`` runs where typer is not installed); this command hands its arguments
over unchanged, ``--help`` included. Register it on the main app with
``camdet.perf.cli.register(app)``.
"""

from __future__ import annotations

import typer

CONTEXT_SETTINGS = {
    "allow_extra_args": True,
    "ignore_unknown_options": True,
    "help_option_names": [],
}
"""Let every argument, ``--help`` included, through to the bench's own parser."""


def bench(ctx: typer.Context) -> None:
    """Benchmark ours vs the naive pipeline vs a bare loop, side by side (see --help)."""
    from camdet.perf.bench import main

    raise typer.Exit(main(ctx.args))


def register(app: typer.Typer) -> None:
    """Add ``bench`` to ``app`` as a command that forwards its arguments."""
    app.command("bench", context_settings=CONTEXT_SETTINGS, add_help_option=False)(bench)
