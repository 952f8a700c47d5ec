"""Load generator: cameras sending encoded frames to the server, measured over a window.

A camera sends JPEG frames (``ours``: to ``detect``), raw tensors (``naive``: to the
``detector`` alone), or a clip's H.264/HEVC access units in order (``video``: one
``detect_video`` sequence per camera, starting at the clip's keyframe and looping; the
cameras' keyframes fall in different frame slots, see ``LoadPoint.lead_in``).

Each camera is a thread with its own gRPC client and one request in flight. Without a
frame rate it sends the next frame as soon as the previous answer arrives (capacity
mode: a concurrency sweep never drops a frame); with one it sends on its own clock and,
when an answer comes back late, skips the frames whose time has passed (real-time mode:
latency stays bounded and the skipped frames are counted as dropped).

Cameras are spread over worker processes (``multiprocessing`` spawn), because one
Python gRPC client cannot move the JPEG bytes of many cameras at GPU rates; with
``processes=0`` they run as threads of the calling process. All workers start on the
same wall-clock instant; after a warm-up the window opens, and only answers that
arrive inside it count. Triton's per-model statistics and the CPU time of the clients
(and of the local server) are sampled at the window edges.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from camdet.perf.cameras import run_cameras, worker_main
from camdet.perf.measurement import (
    MODES,
    BarePoint,
    CameraLog,
    LoadPoint,
    PointResult,
    Window,
    WindowEdges,
    summarize,
)
from camdet.perf.stats import process_tree_cpu_s

__all__ = [
    "MODES",
    "BarePoint",
    "CameraLog",
    "LoadPoint",
    "PointResult",
    "ServerProbe",
    "Window",
    "WindowEdges",
    "run_bare",
    "run_cameras",
    "run_point",
    "summarize",
    "worker_main",
]

logger = logging.getLogger(__name__)

_READY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ServerProbe:
    """What the load generator samples on the server at the window edges.

    Attributes:
        url: gRPC endpoint for Triton's statistics.
        pid: The local server process (for its CPU time), or None for a remote one.
    """

    url: str
    pid: int | None = None

    def sample(self) -> tuple[dict[str, Any], float]:
        """(inference statistics, server CPU seconds) right now."""
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(self.url) as client:
            statistics = client.get_inference_statistics(as_json=True)
        cpu = process_tree_cpu_s(self.pid) if self.pid is not None else float("nan")
        return statistics, cpu


def run_point(
    url: str,
    frames: Sequence[bytes],
    point: LoadPoint,
    window: Window,
    probe: ServerProbe | None = None,
) -> PointResult:
    """Measure one load point against the server at ``url``.

    Raises:
        RuntimeError: If a worker process fails or is not ready in time.
    """
    probe = probe or ServerProbe(url)
    if point.processes == 0:
        log, edges = _run_in_threads(url, frames, point, window, probe)
    else:
        log, edges = _run_in_processes(url, frames, point, window, probe)
    return summarize(point, log, edges)


def _run_in_threads(
    url: str, frames: Sequence[bytes], point: LoadPoint, window: Window, probe: ServerProbe
) -> tuple[CameraLog, WindowEdges]:
    box: dict[str, Any] = {}
    ready, go = threading.Event(), threading.Event()
    start = [0.0]

    def wait_for_start() -> float:
        go.wait()
        return start[0]

    def body() -> None:
        try:
            box["log"] = run_cameras(
                url, frames, point, range(point.cameras), wait_for_start, window, ready.set
            )
        except BaseException as exc:
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    ready.wait(_READY_TIMEOUT_S)
    if "error" in box:
        raise RuntimeError(f"cameras failed to start: {box['error']}") from box["error"]
    start[0] = time.time() + 0.2
    go.set()
    edges = _sample_edges(probe, start[0], window)
    thread.join()
    if "error" in box:
        raise RuntimeError(f"cameras failed: {box['error']}") from box["error"]
    return box["log"], edges


def _run_in_processes(
    url: str, frames: Sequence[bytes], point: LoadPoint, window: Window, probe: ServerProbe
) -> tuple[CameraLog, WindowEdges]:
    context = mp.get_context("spawn")
    start, go, results = context.Value("d", 0.0), context.Event(), context.Queue()
    shares = [list(range(point.cameras))[i :: point.processes] for i in range(point.processes)]
    workers = [
        context.Process(
            target=worker_main,
            args=(url, list(frames), point, share, window, start, go, results),
            daemon=True,
        )
        for share in shares
        if share
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            _expect(results.get(timeout=_READY_TIMEOUT_S), str)
        start.value = time.time() + 0.2
        go.set()
        edges = _sample_edges(probe, start.value, window)
        log = CameraLog()
        for _ in workers:
            log.merge(_expect(results.get(timeout=window.duration_s + 120), CameraLog))
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    finally:
        for worker in workers:
            worker.join(timeout=30)
    return log, edges


def _expect(message: Any, kind: type) -> Any:
    if isinstance(message, BaseException):
        raise RuntimeError(str(message))
    if not isinstance(message, kind):
        raise RuntimeError(f"unexpected worker message {message!r}")
    return message


def _sample_edges(probe: ServerProbe, t0: float, window: Window) -> WindowEdges:
    """Sample the server at the window start and end (sleeping until each)."""
    start, end = t0 + window.warmup_s, t0 + window.warmup_s + window.duration_s
    time.sleep(max(0.0, start - time.time()))
    statistics_before, cpu_before = probe.sample()
    time.sleep(max(0.0, end - time.time()))
    statistics_after, cpu_after = probe.sample()
    return WindowEdges(start, end, statistics_before, statistics_after, cpu_after - cpu_before)


def run_bare(
    frames: Sequence[bytes], loop: Any, window: Window, point: Any | None = None
) -> PointResult:
    """Measure a bare in-process loop, e.g. :class:`camdet.perf.pipelines.BareLoop`.

    Any loop with a ``batch_size`` and a ``detect_batch`` will do (the segment decoder's
    too). Inputs go through back to back, ``loop.batch_size`` at a time, looping over
    ``frames``, in this thread; throughput counts the frames each batch returns (a video
    segment returns many). The window runs from the first batch boundary after the
    warm-up to the last one before its end, so throughput and CPU time cover whole
    batches only. A frame's latency is its batch's time.

    Args:
        frames: Encoded inputs (JPEGs, or video segments).
        loop: The loop.
        window: Warm-up and window lengths.
        point: What to report it as; default: a :class:`BarePoint` of the loop.

    Raises:
        RuntimeError: If the window holds fewer than two batch boundaries.
    """
    batch = loop.batch_size
    t0 = time.time()
    start, end = t0 + window.warmup_s, t0 + window.warmup_s + window.duration_s
    log = CameraLog()
    boundaries: list[tuple[float, float]] = []  # (wall, cpu) at batch boundaries
    index = 0
    while time.time() < end:
        sent = time.time()
        if sent >= start:
            boundaries.append((sent, time.process_time()))
        found = len(loop.detect_batch([frames[(index + i) % len(frames)] for i in range(batch)]))
        done = time.time()
        log.sent += [sent] * found
        log.done += [done] * found
        log.ok += [True] * found
        index += batch
    if len(boundaries) < 2:
        raise RuntimeError(f"window of {window.duration_s} s is too short for one bare batch")
    (first, cpu_first), (last, cpu_last) = boundaries[0], boundaries[-1]
    log.cpu_s = cpu_last - cpu_first
    edges = WindowEdges(first, last + 1e-9, {}, {}, float("nan"))
    point = point or BarePoint(batch, getattr(loop, "preprocess_name", "opencv"))
    return summarize(point, log, edges)
