"""The production ``preprocess`` pipeline's speed in plain processes, per batch and threads.

The served pipelines decode with the same ``dali.py`` and the same
:class:`~camdet.steps.preprocess.runner.BatchPreprocessor` as this probe; comparing the
probe's frames/s and CPU time per frame with a stub's phase counters under load
(``perf/gpu_session.sh diagnose``) says whether a slow served decode is the decoder or
the process around it. Several processes at once show what sharing the GPU's JPEG
decoder and CUDA cores costs.

    python -m camdet.perf.decode_probe --batches 27,64 --threads 1,4 --processes 1,3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections.abc import Sequence

import numpy as np

from camdet.runtime.cuda_schedule import SCHEDULES, set_schedule
from camdet.serving.repository import PRODUCTION_REPOSITORY

DALI_PY = PRODUCTION_REPOSITORY / "preprocess" / "1" / "dali.py"
"""The production pipeline."""


def _frames(count: int) -> list[np.ndarray]:
    """``count`` synthetic 1080p JPEGs (quality 90), as the bench sends them."""
    from camdet.perf.frames import synthetic_frames

    frames = synthetic_frames(count, sizes=((1920, 1080),))
    return [np.frombuffer(f.data, np.uint8) for f in frames]


def _run(
    batch: int, threads: int, seconds: float, device_id: int | None, schedule: str = "auto"
) -> tuple[float, float]:
    """Decode batches of ``batch`` frames for ``seconds``, the context scheduled ``schedule``.

    Returns:
        (frames per second, CPU milliseconds per frame of this whole process).
    """
    from camdet.steps.preprocess.runner import BatchPreprocessor

    if device_id is not None:
        set_schedule(device_id, schedule)

    def sync() -> None:  # the clone of DALI's GPU output is asynchronous
        if device_id is not None:
            import torch

            torch.cuda.synchronize()

    pre = BatchPreprocessor(DALI_PY, max(batch, 64), threads, device_id)
    frames = [f[None] for f in _frames(batch)]
    for _ in range(3):  # decoder start-up
        pre.run(frames)
    sync()
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        pre.run(frames)
        sync()
        done += batch
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return done / wall, 1e3 * cpu / done


def _worker(
    args: tuple[int, int, float, int | None, str], barrier: object, results: object
) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    results.put(_run(*args))  # type: ignore[attr-defined]


def measure(
    batch: int,
    threads: int,
    processes: int,
    seconds: float,
    device_id: int | None,
    schedule: str = "auto",
) -> str:
    """One line: ``processes`` processes decoding at once, their frames/s summed."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=((batch, threads, seconds, device_id, schedule), barrier, results),
        )
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    rates = [results.get() for _ in procs]
    for p in procs:
        p.join()
    fps = sum(r[0] for r in rates)
    cpu = float(np.mean([r[1] for r in rates]))
    return (
        f"batch {batch:3d}  threads {threads:2d}  processes {processes}  {schedule:13s}  "
        f"{fps:8.0f} frames/s  {cpu:6.2f} CPU ms/frame"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print one line per (batch, threads, processes), after this process's facts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="27,64")
    parser.add_argument("--threads", default="1,4")
    parser.add_argument("--processes", default="1,3")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--device", type=int, default=0, help="CUDA device; -1: the CPU")
    parser.add_argument("--schedules", default="auto", help=f"of {','.join(SCHEDULES)}")
    args = parser.parse_args(argv)

    if args.device >= 0:
        from camdet.doctor.gpu import process_facts

        print(f"plain process: {process_facts(args.device)}", flush=True)

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",")]

    device = None if args.device < 0 else args.device
    for schedule in args.schedules.split(","):
        for processes in ints(args.processes):
            for threads in ints(args.threads):
                for batch in ints(args.batches):
                    line = measure(batch, threads, processes, args.seconds, device, schedule)
                    print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
