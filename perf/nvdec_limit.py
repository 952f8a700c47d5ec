"""How many NVDEC decoders a GPU opens at once (``python -m camdet.perf.nvdec_limit``).

``detect_video`` keeps one persistent decoder per camera (``preprocess_video``'s pool, one
pool per model instance, each instance its own process). On the H100 the 256-camera run
failed at ``cuvidCreateDecoder`` with ``CUDA_ERROR_OUT_OF_MEMORY`` while 45 GB of the
card were free, and 128 cameras ran (perf/RESULTS.md, session 12). This finds the limit:
P processes open 1080p H.264 decoders one after another (each decodes its first keyframe,
which is when PyNvVideoCodec creates the hardware decoder) until one is refused or each
holds ``most / P``; all hold theirs until every process is done, so the counts are
concurrent. Optionally every process is a client of a private CUDA MPS daemon, as the
portable GPU server's are (``CAMDET_MPS``).

``--jpeg-pipelines`` holds that many of the production ``preprocess`` DALI pipelines
(``mixed`` decode, its hardware JPEG decoder) in the measuring process, each having decoded
a batch of 1080p JPEGs, as every ``detect_pipeline`` and stand-in ``preprocess`` instance
of a GPU server does: whether they take decoders from the same count (a portable server
left video cameras ~195 of an H100's 288, perf/RESULTS.md session 13).

Prints one JSON line per measurement; exits 0 (a measurement, not a check).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``python -m camdet.perf.nvdec_limit``."""

_MIB = 1 << 20


def _free_mib(device_id: int | None) -> int:
    """Free device memory in MiB as the driver reports it (0 for the CPU)."""
    if device_id is None:
        return 0
    import torch

    return torch.cuda.mem_get_info(device_id)[0] // _MIB


def _open_until_refused(
    keyframe: bytes,
    most: int,
    device_id: int | None,
    ready: Any,
    release: Any,
    results: Any,
    index: int,
) -> None:
    """One process: open decoders until one is refused or ``most`` are open, then hold them.

    Puts ``{"process", "opened", "error", "free_mib_before", "free_mib_after",
    "seconds"}`` on ``results`` once ``most`` is reached or a decoder is refused, then
    waits for ``release`` before closing them.
    """
    from camdet.steps.video.decoders import VideoDecodeError, open_decoder

    unit = np.frombuffer(keyframe, np.uint8)
    decoders, error = [], None
    before = _free_mib(device_id)
    start = time.perf_counter()
    while len(decoders) < most:
        try:
            decoder = open_decoder("h264", device_id)
            frames = decoder.decode(unit, 0)
        except VideoDecodeError as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        decoders.append(decoder)
        if not frames:  # LOW latency answers a keyframe at once; say so if not
            error = f"decoder {len(decoders)} returned no frame for its keyframe"
            break
    results.put(
        {
            "process": index,
            "opened": len(decoders),
            "error": error,
            "free_mib_before": before,
            "free_mib_after": _free_mib(device_id),
            "seconds": round(time.perf_counter() - start, 2),
        }
    )
    ready.wait()
    release.wait()
    for decoder in decoders:
        decoder.close()


def measure(
    keyframe: bytes, processes: int, most: int, device_id: int | None, timeout_s: float
) -> dict[str, Any]:
    """Decoders open at once with ``processes`` processes sharing ``most`` between them.

    Args:
        keyframe: One Annex-B IDR access unit with its SPS/PPS.
        processes: Processes opening decoders at the same time.
        most: Decoders asked for in all (``most // processes`` each).
        device_id: CUDA device (NVDEC), or None for PyAV on the CPU.
        timeout_s: Seconds every process may take to report.
    """
    context = mp.get_context("spawn")
    ready, release = context.Event(), context.Event()
    results = context.Queue()
    each = max(1, most // processes)
    workers = [
        context.Process(
            target=_open_until_refused, args=(keyframe, each, device_id, ready, release, results, i)
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    ready.set()
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        for _ in workers:  # a process that hangs in the driver is reported as missing
            reports.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    except queue.Empty:
        pass
    finally:
        release.set()
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
    reports.sort(key=lambda r: r["process"])
    return {
        "processes": processes,
        "asked": each * processes,
        "opened": sum(r["opened"] for r in reports),
        "per_process": [r["opened"] for r in reports],
        "missing": processes - len(reports),
        "refused": next((r["error"] for r in reports if r["error"]), None),
        "free_mib": [r["free_mib_after"] for r in reports][:1],
        "mib_per_decoder": _per_decoder(reports),
        "reports": reports,
    }


def _per_decoder(reports: list[dict[str, Any]]) -> float | None:
    """Device MiB per open decoder, from the first process's free memory before and after."""
    first = reports[0] if reports else None
    if not first or not first["opened"]:
        return None
    return round((first["free_mib_before"] - first["free_mib_after"]) / first["opened"], 1)


@contextmanager
def held_jpeg_pipelines(count: int, batch: int, device_id: int | None) -> Iterator[list[Any]]:
    """``count`` production ``preprocess`` pipelines, each having run one batch, held open.

    Args:
        count: Pipelines to build (0: none).
        batch: Their batch size, and the 1080p JPEGs each decodes once.
        device_id: CUDA device (``mixed`` decode), or None for the CPU.
    """
    from camdet.perf.frames import synthetic_frames

    from camdet.serving.repository import PRODUCTION_REPOSITORY
    from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module, run_batch

    module = load_pipeline_module(PRODUCTION_REPOSITORY / "preprocess" / "1" / "dali.py")
    frames = synthetic_frames(min(batch, 8), ((1920, 1080),))
    samples = [np.frombuffer(frames[i % len(frames)].data, np.uint8) for i in range(batch)]
    pipes = []
    for _ in range(count):
        pipe = build_pipeline(module, batch_size=batch, num_threads=4, device_id=device_id)
        run_batch(pipe, samples)
        pipes.append(pipe)
    try:
        yield pipes
    finally:
        del pipes[:]


@app.command()
def nvdec_limit(
    processes: Annotated[
        str, typer.Option(help="Process counts to measure, comma-separated.")
    ] = "1,4",
    most: Annotated[int, typer.Option(help="Decoders to ask for in all, per measurement.")] = 512,
    mps: Annotated[
        bool, typer.Option("--mps", help="Every process a client of a private MPS daemon.")
    ] = False,
    cpu: Annotated[bool, typer.Option("--cpu", help="PyAV instead of NVDEC.")] = False,
    timeout_s: Annotated[float, typer.Option(help="Seconds a measurement may take.")] = 120.0,
    jpeg_pipelines: Annotated[
        str,
        typer.Option(help="Production JPEG pipelines held while measuring, comma-separated."),
    ] = "0",
    jpeg_batch: Annotated[int, typer.Option(help="Batch size of those pipelines.")] = 64,
    out: Annotated[Path | None, typer.Option(help="JSON report path.")] = None,
) -> None:
    """Open 1080p H.264 NVDEC decoders until the GPU refuses one; print how many it held."""
    from camdet.scenes.video import scene_clip

    _, units = scene_clip(7, 1, 1920, 1080, gop=30)
    daemon = None
    if mps:
        from camdet.serving import mps as mps_module

        binary = mps_module.control_binary()
        if binary is None:
            raise typer.BadParameter(f"{mps_module.CONTROL} is not on PATH", param_hint="--mps")
        daemon = mps_module.start(binary)
        os.environ.update(daemon.env)  # inherited by the spawned processes
    device_id = None if cpu else 0
    report: dict[str, Any] = {"mps": mps, "results": []}
    try:
        for held in _counts(jpeg_pipelines):
            with held_jpeg_pipelines(held, jpeg_batch, device_id):
                for count in _counts(processes):
                    result = measure(units[0].data, count, most, device_id, timeout_s)
                    result = {"jpeg_pipelines": held, "jpeg_batch": jpeg_batch, **result}
                    report["results"].append(result)
                    print(json.dumps({k: v for k, v in result.items() if k != "reports"}))
    finally:
        if daemon is not None:
            daemon.stop()
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")


def _counts(text: str) -> list[int]:
    """``"0,1,2"`` as ``[0, 1, 2]``."""
    return [int(s) for s in text.split(",") if s.strip()]


if __name__ == "__main__":
    app()
