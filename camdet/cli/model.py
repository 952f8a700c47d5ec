"""``camdet model``: bring a YOLO ONNX model into the repository, list the served one.

A thin command line over :mod:`camdet.engine.install`; errors print and exit 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from camdet.constants import INPUT_SHAPE, format_input_size
from camdet.engine.errors import BuildEngineError
from camdet.engine.install import RepositoryModel, add_model, describe_model
from camdet.serving.repository import find_repository

app = typer.Typer(no_args_is_help=True, add_completion=False)

RepositoryOption = Annotated[
    Path | None,
    typer.Option(
        "--repository",
        envvar="CAMDET_MODEL_REPOSITORY",
        help="Model repository (default: ./model_repository if present, else the installed one).",
    ),
]
NameOption = Annotated[
    str, typer.Option("--name", help="The detector model's folder (the ensembles' step).")
]


def _echo_model(model: RepositoryModel) -> None:
    typer.echo(f"{model.name}: {model.onnx} ({'with' if model.has_plan else 'no'} TensorRT plan)")
    typer.echo(f"  input [batch, {', '.join(map(str, model.input_dims))}]")
    typer.echo(f"  output [batch, {', '.join(map(str, model.output_dims))}]")
    typer.echo(f"  {len(model.labels)} classes: {', '.join(model.labels)}")


@app.command()
def add(
    onnx_path: Annotated[
        Path, typer.Argument(help="YOLOv8/YOLO11 ONNX export (dynamic batch, no NMS).")
    ],
    labels: Annotated[
        Path, typer.Option("--labels", help="Class names, one per line (spaces allowed).")
    ],
    name: NameOption = "detector",
    repository: RepositoryOption = None,
) -> None:
    """Check MODEL.onnx against the labels and install it, its labels and the configs' dims.

    The input size is CAMDET_INPUT_SIZE (640x640 by default, or 640x384 for 16:9 cameras);
    set it the same when serving.
    """
    path, why = find_repository(repository)
    typer.echo(f"model repository: {path} ({why}); input size {format_input_size(INPUT_SHAPE)}")
    try:
        model = add_model(path, onnx_path, labels, name)
    except BuildEngineError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo("installed; contract checks passed:")
    _echo_model(model)
    if model.has_plan:
        typer.echo("the TensorRT plan is stale: build_engine.py check || build rebuilds it")


@app.command("list")
def list_models(name: NameOption = "detector", repository: RepositoryOption = None) -> None:
    """Show the detector the repository serves: file, tensor dims, classes."""
    path, why = find_repository(repository)
    typer.echo(f"model repository: {path} ({why})")
    try:
        _echo_model(describe_model(path, name))
    except BuildEngineError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
