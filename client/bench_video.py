"""Client CPU per frame: H.264 pass-through versus decode + JPEG encode, same clip, same run.

What ``camdet ingest`` spends on the host for each frame of an H.264/HEVC camera, up to
the request it sends (no server needed; the network and the server are the same for both
paths and left out):

- pass-through: demux, re-frame as an Annex-B access unit, build the ``detect_video``
  request;
- decode: demux, decode (FFmpeg, its own threads), convert to RGB, JPEG-encode (quality
  90, OpenCV), build the ``detect`` request.

CPU time is the whole process's (``time.process_time``: every thread, FFmpeg's included).
The two paths alternate A B B A so that a machine warming up or slowing down shifts both.
Run ``python -m camdet.client.bench_video`` (``--help`` for options).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from camdet.client.sources import AvSource

from camdet.contract import frame_input, video_inputs
from camdet.scenes.jpeg import encode_jpeg

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PathCost:
    """CPU spent by one path over all its repeats.

    Attributes:
        frames: Frames processed.
        cpu_s: Process CPU time, seconds.
        wall_s: Wall-clock time, seconds.
    """

    frames: int
    cpu_s: float
    wall_s: float

    @property
    def cpu_ms_per_frame(self) -> float:
        """Milliseconds of CPU per frame."""
        return 1000.0 * self.cpu_s / max(self.frames, 1)

    def __add__(self, other: PathCost) -> PathCost:
        return PathCost(
            self.frames + other.frames, self.cpu_s + other.cpu_s, self.wall_s + other.wall_s
        )


def pass_through(clip: Path) -> int:
    """Demux the clip into ``detect_video`` requests; the number of frames."""
    frames = 0
    for frame in AvSource(str(clip), {}, live=False).session():
        video_inputs(frame.video.data, frame.position)
        frames += 1
    return frames


def decode_and_encode(clip: Path, quality: int = 90) -> int:
    """Decode the clip and JPEG-encode every frame into ``detect`` requests; frames."""
    frames = 0
    for frame in AvSource(str(clip), {}, live=False, pass_video=False).session():
        frame_input(encode_jpeg(frame.rgb(), quality))
        frames += 1
    return frames


def measure(path: Callable[[Path], int], clip: Path) -> PathCost:
    """One run of a path over the clip."""
    cpu, wall = time.process_time(), time.perf_counter()
    frames = path(clip)
    return PathCost(frames, time.process_time() - cpu, time.perf_counter() - wall)


def compare(clip: Path, repeats: int = 2) -> tuple[PathCost, PathCost]:
    """``(pass-through, decode)`` costs over ``repeats`` A B B A rounds."""
    through = decoded = PathCost(0, 0.0, 0.0)
    for _ in range(repeats):
        through += measure(pass_through, clip)
        decoded += measure(decode_and_encode, clip)
        decoded += measure(decode_and_encode, clip)
        through += measure(pass_through, clip)
    return through, decoded


def synthetic_clip(folder: Path, frames: int, width: int = 1920, height: int = 1080) -> Path:
    """A camera-like H.264 clip of the synthetic scenes (1080p, keyframe every second)."""
    from camdet.scenes import write_clip  # the scene renderer is heavy; only when needed

    path = folder / f"bench_{width}x{height}_{frames}.mp4"
    write_clip(path, seed=7, num_frames=frames, width=width, height=height, fps=30)
    return path


def report(through: PathCost, decoded: PathCost) -> str:
    """The comparison as a few lines of text."""
    ratio = decoded.cpu_ms_per_frame / max(through.cpu_ms_per_frame, 1e-9)
    return (
        f"pass-through:        {through.cpu_ms_per_frame:8.3f} ms CPU/frame "
        f"({through.frames} frames)\n"
        f"decode + JPEG (q90): {decoded.cpu_ms_per_frame:8.3f} ms CPU/frame "
        f"({decoded.frames} frames)\n"
        f"decode / pass-through: {ratio:.1f}x"
    )


def main(
    clip: Annotated[
        Path | None,
        typer.Option(help="H.264/HEVC clip to use. Default: a synthetic 1080p clip.", exists=True),
    ] = None,
    frames: Annotated[int, typer.Option(min=1, help="Frames of the synthetic clip.")] = 60,
    repeats: Annotated[int, typer.Option(min=1, help="A B B A rounds.")] = 2,
) -> None:
    """Print client CPU per frame, pass-through versus decode + JPEG encode."""
    with tempfile.TemporaryDirectory() as folder:
        path = clip or synthetic_clip(Path(folder), frames)
        through, decoded = compare(path, repeats)
    typer.echo(report(through, decoded))


if __name__ == "__main__":
    typer.run(main)
