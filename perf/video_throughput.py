"""Decode throughput of the per-camera decoders (``python -m camdet.perf.video_throughput``).

Feeds the same 1080p camera clip to N persistent decoders, in parallel threads, as
``preprocess_video`` does with N cameras, and reports frames/s for decode alone and for
decode + the batched DALI letterbox. A GPU measurement for issue 11's numbers (NVDEC:
656 frames/s one stream, ~3,800 for 8-32 streams, measured with the bare API).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from camdet.scenes.video import scene_clip
from camdet.steps.video.decoders import open_decoder
from camdet.steps.video.letterbox import VideoLetterbox


def measure(units: list, streams: int, rounds: int, device_id: int | None, letterbox) -> dict:
    """Frames/s of ``streams`` decoders fed ``rounds`` access units each.

    Each round is what one batch of ``preprocess_video`` does: every camera decodes its
    access unit in a thread of its own (as :class:`camdet.steps.video.pool.DecoderPool` lets
    the model do), then the round's frames are letterboxed in one DALI run.
    """
    decoders = [open_decoder("h264", device_id) for _ in range(streams)]
    arrays = [np.frombuffer(u.data, np.uint8) for u in units]
    decoded = 0
    with ThreadPoolExecutor(min(streams, os.cpu_count() or 1)) as pool:
        start = time.perf_counter()
        for index in range(rounds):
            # Wrap at a keyframe boundary: the clip is one GOP, so index 0 is the keyframe.
            unit = arrays[index % len(arrays)]
            per_camera = pool.map(lambda d, u=unit, i=index: d.decode(u, i), decoders)
            frames = [f for found in per_camera for f in found]
            decoded += len(frames)
            if letterbox is not None and frames:
                letterbox.run([f.image for f in frames])
        seconds = time.perf_counter() - start
    return {"streams": streams, "frames": decoded, "seconds": seconds, "fps": decoded / seconds}


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet perf video-throughput`` alone, for ``python -m camdet.perf.video_throughput``."""


@app.command()
def video_throughput(
    streams: Annotated[
        str, typer.Option(help="Decoder counts to measure, comma-separated.")
    ] = "1,8,32",
    rounds: Annotated[int, typer.Option(help="Access units per stream.")] = 120,
    cpu: Annotated[bool, typer.Option("--cpu", help="PyAV instead of NVDEC.")] = False,
    out: Annotated[Path | None, typer.Option(help="JSON report path.")] = None,
) -> None:
    """Decode throughput of the per-camera decoders, alone and with the DALI letterbox.

    Prints one JSON line per decoder count, and writes the whole report with --out.
    """
    device_id = None if cpu else 0
    _, units = scene_clip(7, 60, 1920, 1080, gop=60)
    report = {"device": "cpu (PyAV)" if cpu else "cuda:0 (NVDEC)", "results": []}
    for count in (int(s) for s in streams.split(",") if s.strip()):
        letterbox = VideoLetterbox(min(count, 64), 4, device_id) if count <= 64 else None
        report["results"].append(
            {
                "decode": measure(units, count, rounds, device_id, None),
                "decode_letterbox": measure(units, count, rounds, device_id, letterbox),
            }
        )
        print(json.dumps(report["results"][-1]))
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    app(prog_name="python -m camdet.perf.video_throughput")
