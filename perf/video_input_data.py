"""perf_analyzer input data for ``detect_video``: one stream of access units per camera.

    python -m camdet.perf.video_input_data --out perf-data --streams 8 --frames 60
    perf_analyzer -m detect_video -i grpc -u localhost:8001 \
        --input-data perf-data/detect_video.json --sequence-length 60 --serial-sequences \
        --request-parameter codec:h264:string --concurrency-range 8

``detect_video`` is a sequence model (one Triton sequence per camera), so the document
holds *streams* (perf_analyzer's ``{"data": [[entry, ...], ...]}``): each stream is one
synthetic camera clip (:func:`camdet.scenes.video.scene_clip`) as its Annex-B access units
in decode order, starting with a keyframe, each with its ``pts``. perf_analyzer starts a
sequence on a stream and walks it in order (looping it when ``--sequence-length`` is
longer; the clip starts with a keyframe, so a loop is a valid stream too).
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from camdet.perf.input_data import (
    INPUT_DATA_SCHEMA,
    SCHEMA_FILE,
    contract_problems,
    schema_problems,
    tensor_json,
)

from camdet.contract import VIDEO_ENSEMBLE
from camdet.scenes.video import EncodedUnit, scene_clip
from camdet.serving.repository import PRODUCTION_REPOSITORY, read_config

logger = logging.getLogger(__name__)


def stream_entries(units: Sequence[EncodedUnit]) -> list[dict[str, Any]]:
    """One camera's requests: ``video_chunk`` UINT8 ``[bytes]`` and ``pts`` INT64 ``[1]``."""
    return [
        {
            "video_chunk": tensor_json(np.frombuffer(unit.data, np.uint8)),
            "pts": tensor_json(np.array([unit.pts], np.int64)),
        }
        for unit in units
    ]


def video_document(
    streams: int, frames: int, width: int, height: int, codec: str = "h264", seed: int = 0
) -> dict[str, Any]:
    """The document: ``streams`` cameras of ``frames`` access units (one GOP each)."""
    data = []
    for camera in range(streams):
        _, units = scene_clip(seed + camera, frames, width, height, codec=codec, gop=frames)
        data.append(stream_entries(units))
    return {"data": data}


def write_video_input_data(
    out_dir: Path,
    streams: int,
    frames: int,
    width: int,
    height: int,
    codec: str = "h264",
    repository: Path = PRODUCTION_REPOSITORY,
) -> Path:
    """Write and check ``detect_video.json`` (and the schema) in ``out_dir``.

    Raises:
        ValueError: If the document breaks the schema or the ensemble's contract.
    """
    document = video_document(streams, frames, width, height, codec)
    config = read_config(repository / VIDEO_ENSEMBLE / "config.pbtxt")
    problems = schema_problems(document) + contract_problems(document, config, sequence=True)
    if problems:
        raise ValueError(f"input data of {VIDEO_ENSEMBLE} is invalid: " + "; ".join(problems[:5]))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SCHEMA_FILE).write_text(json.dumps(INPUT_DATA_SCHEMA, indent=2) + "\n")
    path = out_dir / f"{VIDEO_ENSEMBLE}.json"
    path.write_text(json.dumps(document))
    logger.info("wrote %s: %d streams of %d access units", path, streams, frames)
    return path


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet perf video-input-data`` alone, for ``python -m camdet.perf.video_input_data``."""


class Codec(enum.StrEnum):
    """Codec of the synthetic camera clips."""

    H264 = "h264"
    HEVC = "hevc"


@app.command()
def video_input_data(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("perf-data"),
    streams: Annotated[int, typer.Option(help="Cameras (one stream each).")] = 8,
    frames: Annotated[int, typer.Option(help="Access units per camera.")] = 60,
    size: Annotated[str, typer.Option(help="Frame size WxH, pixels.")] = "1920x1080",
    codec: Annotated[Codec, typer.Option(help="Codec of the clips.")] = Codec.H264,
) -> None:
    """perf_analyzer input data for detect_video: one stream of access units per camera."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    width, height = (int(v) for v in size.lower().split("x"))
    print(write_video_input_data(out, streams, frames, width, height, codec.value))


if __name__ == "__main__":
    app(prog_name="python -m camdet.perf.video_input_data")
