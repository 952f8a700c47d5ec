"""Command line of :mod:`camdet.perf.multi_gpu`: ``python -m camdet.perf.multi_gpu --help``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from camdet.perf.frames import parse_size, synthetic_frames
from camdet.perf.load import Window
from camdet.perf.multi_gpu import LAYOUTS, MultiGpuConfig, run, summary_lines

from camdet.serving.repository import PRODUCTION_REPOSITORY

app = typer.Typer(add_completion=False)


def load_frames(
    input_data: Path | None, count: int, size: str, repository: Path, out_dir: Path
) -> list[bytes]:
    """The run's frames, always read back from an ensemble input-data JSON (as the bench)."""
    from camdet.perf.input_data import read_encoded_frames, write_input_data

    if input_data is None:
        frames = synthetic_frames(count, (parse_size(size),))
        input_data = write_input_data(
            out_dir / "input_data", frames, repository, models=("detect",)
        )["detect"]
    return read_encoded_frames(input_data)


@app.command()
def multi_gpu(
    gpus: Annotated[int, typer.Option(min=2, help="GPUs of the 2-GPU layouts (0..gpus-1).")] = 2,
    cameras_per_gpu: Annotated[
        int, typer.Option(min=1, help="Cameras per GPU, capacity mode (saturation).")
    ] = 256,
    processes_per_gpu: Annotated[
        int, typer.Option(min=1, help="Client worker processes per GPU.")
    ] = 8,
    layouts: Annotated[
        str, typer.Option(help=f"Comma-separated, 'one' included: {', '.join(LAYOUTS)}.")
    ] = ",".join(LAYOUTS),
    warmup: Annotated[float, typer.Option(help="Warm-up before each window, seconds.")] = 5.0,
    duration: Annotated[float, typer.Option(help="Counted window, seconds.")] = 15.0,
    repeats: Annotated[int, typer.Option(min=1, help="Measurements per layout, ABBA.")] = 2,
    input_data: Annotated[
        Path | None,
        typer.Option(help="perf_analyzer input data of 'detect' (else synthetic frames)."),
    ] = None,
    frames: Annotated[int, typer.Option(min=1, help="Synthetic frames to cycle.")] = 64,
    size: Annotated[str, typer.Option(help="Synthetic frame size WIDTHxHEIGHT.")] = "1920x1080",
    repository: Annotated[
        Path, typer.Option(help="Production model repository.")
    ] = PRODUCTION_REPOSITORY,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("bench-out/multi-gpu"),
    require_ratio: Annotated[
        float | None,
        typer.Option(help="Exit 1 unless the better multi-GPU layout reaches this x one GPU."),
    ] = None,
) -> None:
    """One server on GPU 0 vs one server per GPU vs one server on every GPU, one run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = MultiGpuConfig(
        gpus=gpus,
        cameras_per_gpu=cameras_per_gpu,
        processes_per_gpu=processes_per_gpu,
        window=Window(warmup, duration),
        repeats=repeats,
        layouts=tuple(name.strip() for name in layouts.split(",")),
        frames=load_frames(input_data, frames, size, repository, out),
        repository=repository,
        out_dir=out,
    )
    report = run(config)
    for line in summary_lines(report):
        typer.echo(line)
    typer.echo(f"report: {out / 'multi_gpu.json'}")
    best = report["layouts"][report["choice"]]["ratio_to_one"]
    if require_ratio is not None and best < require_ratio:
        typer.echo(f"FAILED: {best:.2f}x < required {require_ratio:.2f}x", err=True)
        raise typer.Exit(1)


def main() -> None:
    """Entry point of ``python -m camdet.perf.multi_gpu``."""
    app()
