"""Whether one process decodes several cameras at once: ``python -m camdet.perf.nvdec_parallel``.

The served video pipeline decodes ~410-440 frames/s per process whatever its decode
threads (perf/RESULTS.md: ``video_throughput`` 414 / 423 / 420 frames/s for 1 / 8 / 32
cameras in threads; ``detect_video_pipeline`` ~410 per instance at 192 cameras), while the
card's decoders are far from busy. This tells the causes apart, with the decoder the
server uses (:class:`~camdet.steps.video.decoders.NvDecoder`, or PyAV with ``--cpu``):

- ``threads N``: N decoders in N threads of one process, frames/s in all;
- ``processes N``: N processes with one decoder each, frames/s in all;
- ``gil``: how fast a pure-Python loop runs while another thread of its process decodes,
  against the same loop alone (1.0: the decoder gives the GIL back while it waits for
  the hardware; near 0: it holds the GIL, and a process decodes one frame at a time).

    python -m camdet.perf.nvdec_parallel --threads 1,4,8 --processes 4,8 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from camdet.steps.video.decoders import Decoder


def clip_units() -> list[np.ndarray]:
    """One 1080p H.264 GOP of 60 access units (the bench's camera clip), keyframe first."""
    from camdet.scenes.video import scene_clip

    _, units = scene_clip(7, 60, 1920, 1080, gop=60)
    return [np.frombuffer(u.data, np.uint8) for u in units]


def decode_for(decoder: Decoder, units: Sequence[np.ndarray], seconds: float) -> int:
    """Feed ``units`` round and round for ``seconds``; the frames that came out.

    The clip is one GOP, so every pass starts again at its keyframe.
    """
    frames = index = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        frames += len(decoder.decode(units[index % len(units)], index))
        index += 1
    return frames


def _decoder(device_id: int | None, units: Sequence[np.ndarray]) -> Decoder:
    """An opened decoder that has decoded one GOP (NVDEC's start-up is not measured)."""
    from camdet.steps.video.decoders import open_decoder

    decoder = open_decoder("h264", device_id)
    for index, unit in enumerate(units):
        decoder.decode(unit, index)
    return decoder


def in_threads(count: int, seconds: float, device_id: int | None) -> dict:
    """``count`` decoders, one thread each, in this process."""
    units = clip_units()
    decoders = [_decoder(device_id, units) for _ in range(count)]
    with ThreadPoolExecutor(count) as pool:
        start = time.perf_counter()
        frames = sum(pool.map(lambda d: decode_for(d, units, seconds), decoders))
        elapsed = time.perf_counter() - start
    return {"mode": "threads", "decoders": count, "fps": round(frames / elapsed, 1)}


def _process(device_id: int | None, seconds: float, barrier: Any, results: Any) -> None:
    """One worker: open a decoder, wait for the others, decode, report its frames."""
    units = clip_units()
    decoder = _decoder(device_id, units)
    barrier.wait()
    results.put(decode_for(decoder, units, seconds))


def in_processes(count: int, seconds: float, device_id: int | None) -> dict:
    """``count`` processes with one decoder each, started together once all are open."""
    context = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, results = context.Barrier(count + 1), context.Queue()
    workers = [
        context.Process(target=_process, args=(device_id, seconds, barrier, results))
        for _ in range(count)
    ]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    frames = sum(results.get() for _ in workers)
    elapsed = time.perf_counter() - start
    for worker in workers:
        worker.join()
    return {"mode": "processes", "decoders": count, "fps": round(frames / elapsed, 1)}


def _spin(seconds: float) -> float:
    """Iterations per second of a pure-Python loop (it needs the GIL all the time)."""
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        count += 1
    return count / seconds


def gil_share(seconds: float, device_id: int | None) -> dict:
    """The Python loop's speed beside one decoding thread, over its speed alone."""
    units = clip_units()
    decoder = _decoder(device_id, units)
    alone = _spin(seconds)
    decoded: list[int] = []
    thread = threading.Thread(target=lambda: decoded.append(decode_for(decoder, units, seconds)))
    thread.start()
    beside = _spin(seconds)
    thread.join()
    return {
        "mode": "gil",
        "python_loop_share": round(beside / alone, 3),
        "decoder_fps_beside_loop": round(decoded[0] / seconds, 1),
    }


def _counts(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    """Print one JSON line per measurement; ``--out`` writes them all."""
    parser = argparse.ArgumentParser(prog="python -m camdet.perf.nvdec_parallel")
    parser.add_argument("--threads", type=_counts, default=[1, 4, 8])
    parser.add_argument("--processes", type=_counts, default=[4, 8])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cpu", action="store_true", help="PyAV instead of NVDEC")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device_id = None if args.cpu else 0
    results = [gil_share(args.seconds, device_id)]
    print(json.dumps(results[-1]), flush=True)
    for count in args.threads:
        results.append(in_threads(count, args.seconds, device_id))
        print(json.dumps(results[-1]), flush=True)
    for count in args.processes:
        results.append(in_processes(count, args.seconds, device_id))
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
