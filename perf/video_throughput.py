"""Decode throughput of the per-camera decoders (``python -m camdet.perf.video_throughput``).

Feeds the same 1080p camera clip to N persistent decoders, in parallel threads, as
``preprocess_video`` does with N cameras, and reports frames/s for decode alone and for
decode + the batched DALI letterbox. A GPU measurement for issue 11's numbers (NVDEC:
656 frames/s one stream, ~3,800 for 8-32 streams, measured with the bare API).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

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


def main() -> None:
    """Measure and write a JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=120, help="access units per stream")
    parser.add_argument("--cpu", action="store_true", help="PyAV instead of NVDEC")
    parser.add_argument("--out", type=Path, default=None, help="JSON report path")
    args = parser.parse_args()
    device_id = None if args.cpu else 0
    _, units = scene_clip(7, 60, 1920, 1080, gop=60)
    report = {"device": "cpu (PyAV)" if args.cpu else "cuda:0 (NVDEC)", "results": []}
    for streams in args.streams:
        letterbox = VideoLetterbox(min(streams, 64), 4, device_id) if streams <= 64 else None
        report["results"].append(
            {
                "decode": measure(units, streams, args.rounds, device_id, None),
                "decode_letterbox": measure(units, streams, args.rounds, device_id, letterbox),
            }
        )
        print(json.dumps(report["results"][-1]))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
