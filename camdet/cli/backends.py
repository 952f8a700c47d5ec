"""``camdet backends``: build Triton backends the pip-installed server lacks (the DALI backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command("build")
def build(
    name: Annotated[str, typer.Argument(help="The backend to build: dali.")],
    source: Annotated[
        Path | None,
        typer.Option(
            help="Folder of local checkouts (dali_backend, core, common, backend, Catch2, "
            "rapidjson) at the pinned commits; default: clone them from GitHub.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    jobs: Annotated[int, typer.Option(help="Parallel compile jobs.")] = 2,
) -> None:
    """Build Triton's DALI backend for the portable server (CMake, g++, CUDA 12 wheels).

    It is built against the installed DALI and the Triton 2.51 of nvidia-pytriton, and
    installed where `camdet serve` finds it (CAMDET_BACKENDS_DIR overrides). From then on
    the portable server runs the production preprocess model on it (CAMDET_DALI_BACKEND=0:
    the Python stand-in again). A failed build says what is missing in one line.
    """
    from camdet.serving.backends import BackendBuildError, build_dali_backend

    if name != "dali":
        raise typer.BadParameter(f"unknown backend {name!r}; known: dali", param_hint="NAME")
    try:
        backend = build_dali_backend(source=source, jobs=jobs)
    except BackendBuildError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(backend.describe())
