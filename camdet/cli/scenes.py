"""``camdet scenes``: write synthetic camera datasets and clips with COCO ground truth.

Only argument parsing and the summary live here; the rendering is :mod:`camdet.scenes`.
The main CLI mounts :data:`app` as the ``scenes`` sub-command.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from camdet import scenes

app = typer.Typer(
    help="Render synthetic camera scenes (shapes on cluttered backgrounds) with exact "
    "COCO ground truth.",
    no_args_is_help=True,
)

_DEFAULT_SIZES = ("1280x720", "1920x1080")


def parse_size(text: str) -> tuple[int, int]:
    """Parse a frame size written as ``WIDTHxHEIGHT``.

    Args:
        text: E.g. ``"1920x1080"``.

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        typer.BadParameter: If the text is not two positive integers joined by ``x``.
    """
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise typer.BadParameter(f"expected WIDTHxHEIGHT such as 1920x1080, got {text!r}")
    width, height = (int(part) for part in parts)
    if width <= 0 or height <= 0:
        raise typer.BadParameter(f"width and height must be positive, got {text!r}")
    return width, height


def _class_counts(json_path: Path) -> Counter[str]:
    """Number of labelled objects per class name in a COCO file."""
    coco = json.loads(json_path.read_text())
    names = {category["id"]: category["name"] for category in coco["categories"]}
    return Counter(names[annotation["category_id"]] for annotation in coco["annotations"])


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {counts[name]}" for name in scenes.CLASSES)


@app.command()
def images(
    out_dir: Annotated[
        Path, typer.Argument(help="Folder for the JPEG files and annotations.json.")
    ],
    count: Annotated[int, typer.Option("--count", "-n", min=0, help="Number of images.")] = 100,
    seed: Annotated[
        int, typer.Option(help="Seed; image i is drawn from default_rng((seed, i)).")
    ] = 0,
    size: Annotated[
        list[str] | None,
        typer.Option(
            help="Frame size WIDTHxHEIGHT; repeat to mix sizes.",
            show_default=", ".join(_DEFAULT_SIZES),
        ),
    ] = None,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG quality.")] = 90,
) -> None:
    """Write random independent frames as JPEG files plus a COCO annotation file."""
    sizes = [parse_size(text) for text in (size or _DEFAULT_SIZES)]
    started = time.perf_counter()
    try:
        json_path = scenes.write_image_dataset(out_dir, count, seed, sizes, quality)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    elapsed = time.perf_counter() - started
    counts = _class_counts(json_path)
    table = Table(title="Synthetic images", show_header=False)
    table.add_row("images", f"{count} ({', '.join(f'{w}x{h}' for w, h in sizes)})")
    table.add_row("objects", f"{sum(counts.values())}: {_counts_text(counts)}")
    table.add_row("annotations", str(json_path))
    table.add_row("time", f"{elapsed:.1f} s ({1e3 * elapsed / max(count, 1):.1f} ms/image)")
    Console().print(table)


@app.command()
def clips(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the .mp4 clips and their .json.")],
    num_clips: Annotated[int, typer.Option("--clips", "-n", min=1, help="Number of clips.")] = 1,
    frames: Annotated[int, typer.Option(min=1, help="Frames per clip.")] = 300,
    size: Annotated[str, typer.Option(help="Frame size WIDTHxHEIGHT (even numbers).")] = "1280x720",
    fps: Annotated[int, typer.Option(min=1, help="Frame rate; also the keyframe interval.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the first clip; clip k uses seed + k.")] = 0,
    tracking: Annotated[
        bool,
        typer.Option(
            help="Tracking scenes: a pillar objects pass behind and designed head-on "
            "crossings (the occlusions and crossings of `python -m camdet.tracking.evaluate`)."
        ),
    ] = False,
) -> None:
    """Write H.264 clips of moving objects, each with COCO boxes and MOT track ids per frame."""
    width, height = parse_size(size)
    events = scenes.TrackingEvents() if tracking else None
    table = Table(title="Synthetic clips")
    for column in ("clip", "seed", "frames", "objects", "annotations"):
        table.add_column(column)
    started = time.perf_counter()
    for index in range(num_clips):
        clip_path = out_dir / f"clip_{index:03d}.mp4"
        try:
            json_path = scenes.write_clip(
                clip_path, seed + index, frames, width, height, fps, events=events
            )
        except ValueError as error:
            raise typer.BadParameter(str(error)) from error
        counts = _class_counts(json_path)
        table.add_row(
            clip_path.name,
            str(seed + index),
            f"{frames} @ {width}x{height}, {fps} fps",
            f"{sum(counts.values())} boxes",
            str(json_path),
        )
    Console().print(table)
    elapsed = time.perf_counter() - started
    Console().print(f"{num_clips * frames} frames in {elapsed:.1f} s")
