"""Load generator: cameras sending encoded frames to the server, measured over a window.

A camera sends JPEG frames (``ours``: to ``detect``), raw tensors (``naive``: to the
``detector`` alone), or a clip's H.264/HEVC access units in order (``video``: one
``detect_video`` sequence per camera, starting at the clip's keyframe and looping).

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
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from camdet.perf.stats import latency_summary, model_stats_delta, process_tree_cpu_s

logger = logging.getLogger(__name__)

MODES = ("ours", "naive", "video")
"""Pipelines a load point can drive through the server (see :mod:`camdet.perf.pipelines`)."""

_MAX_ERRORS = 5  # distinct error messages kept per worker
_READY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class LoadPoint:
    """One measurement: which pipeline, how many cameras, how fast.

    Attributes:
        mode: ``"ours"`` (JPEG to the ensemble), ``"naive"`` (client preprocessing, the
            detector alone, client NMS) or ``"video"`` (access units to ``detect_video``,
            one sequence per camera; its frames are a clip's access units).
        cameras: Concurrent streams, each with at most one request in flight.
        fps: Frames per second of each camera; None sends back to back (capacity).
        processes: Worker processes the cameras are spread over (0: threads here).
        shm: Input transport: ``"none"``, ``"system"`` or ``"cuda"`` shared memory
            (``"none"`` only for video).
        torch_threads: torch intra-op threads of the clients (naive NMS); None: default.
        codec: The clip's codec (video only).
    """

    mode: str
    cameras: int
    fps: float | None = None
    processes: int = 1
    shm: str = "none"
    torch_threads: int | None = None
    codec: str = "h264"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.cameras < 1 or self.processes < 0 or (self.fps is not None and self.fps <= 0):
            raise ValueError(f"invalid load point {self}")
        if self.mode == "video" and self.shm != "none":
            raise ValueError("video cameras send their access units over gRPC (shm none)")

    def first_frame(self, camera: int, num_frames: int) -> int:
        """Where camera ``camera`` starts in ``num_frames`` frames.

        A video stream starts at its keyframe; a JPEG camera at its own frame, wrapping
        around (cameras outnumber frames at scale).
        """
        return 0 if self.mode == "video" else camera % num_frames

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``"ours 4 cam @ 5 fps"``."""
        rate = f" @ {self.fps:g} fps" if self.fps else ""
        return f"{self.mode} {self.cameras} cam{rate}"


@dataclass(frozen=True)
class Window:
    """Timing of a measurement, in seconds: warm-up, then the counted window."""

    warmup_s: float = 3.0
    duration_s: float = 10.0


@dataclass
class CameraLog:
    """What the cameras of one worker did (wall-clock times, seconds since the epoch).

    Attributes:
        sent: Send time of each finished request.
        done: Answer time of each finished request.
        ok: Whether each request succeeded.
        dropped: Due times of frames skipped because the previous answer was late.
        held: Answer times of video responses that carried no frame (the decoder kept
            it for a later response); neither a frame nor a failure.
        cpu_s: CPU seconds the worker process used inside the window.
        errors: First distinct error messages.
    """

    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    dropped: list[float] = field(default_factory=list)
    held: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: CameraLog) -> None:
        """Append another worker's log (CPU seconds add up)."""
        self.sent += other.sent
        self.done += other.done
        self.ok += other.ok
        self.dropped += other.dropped
        self.held += other.held
        self.cpu_s += other.cpu_s
        self.errors += [e for e in other.errors if e not in self.errors][:_MAX_ERRORS]


@dataclass(frozen=True)
class PointResult:
    """The measured outcome of one load point (or of one bare-loop run).

    Attributes:
        label: Human-readable name of the point.
        mode: ``ours``, ``naive``, ``video``, ``bare`` or ``segment``.
        cameras: Cameras (bare: frames per batch).
        fps: Per-camera frame rate, None for capacity mode.
        processes: Client worker processes.
        shm: Input transport.
        completed: Successful requests answered inside the window.
        failed: Failed requests answered inside the window.
        dropped: Frames skipped inside the window (real-time mode only).
        held: Video responses without a frame inside the window (see :class:`CameraLog`).
        duration_s: Length of the window.
        throughput_fps: Successful frames per second.
        latency: Latency summary of successful requests (see :func:`latency_summary`).
        client_cpu_ms_per_frame: Client CPU milliseconds per successful frame.
        server_cpu_ms_per_frame: Server CPU milliseconds (all processes) per frame, or
            NaN when the server is not a local process of this run.
        model_stats: Triton's per-model statistics over the window.
        errors: First distinct error messages.
        repeat: Which repetition of the bench sequence measured it (0-based).
    """

    label: str
    mode: str
    cameras: int
    fps: float | None
    processes: int
    shm: str
    completed: int
    failed: int
    dropped: int
    duration_s: float
    throughput_fps: float
    latency: dict[str, float]
    client_cpu_ms_per_frame: float
    server_cpu_ms_per_frame: float = float("nan")
    model_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    repeat: int = 0
    held: int = 0

    def row(self) -> dict[str, Any]:
        """Flat dict for CSV: one column per scalar, per-model stats as ``model.stat``."""
        flat: dict[str, Any] = {
            k: v for k, v in self.__dict__.items() if k not in ("latency", "model_stats", "errors")
        }
        flat.update(self.latency)
        for model, stats in sorted(self.model_stats.items()):
            flat.update({f"{model}.{k}": v for k, v in stats.items()})
        flat["errors"] = " | ".join(self.errors)
        return flat


# ----------------------------------------------------------------------------- cameras


def _request_function(
    point: LoadPoint, url: str, tag: str, frames: Sequence[bytes]
) -> tuple[Callable[[bytes], Any], Any, Any]:
    """One camera's ``detect(frame_bytes)``, and its transport and client to close after."""
    import tritonclient.grpc as grpcclient
    from camdet.client.sequence import sequence_id
    from camdet.perf.pipelines import EnsembleClient, NaiveClient, VideoClient
    from camdet.perf.transport import make_transport

    from camdet.constants import INPUT_HEIGHT, INPUT_WIDTH

    mode, shm, torch_threads = point.mode, point.shm, point.torch_threads
    client = grpcclient.InferenceServerClient(url)
    if mode == "video":
        # Unique per point and process: a sequence left by an earlier point (or run)
        # must not swallow this camera's keyframe.
        camera = f"bench/{os.getpid()}/{time.time_ns()}/{tag}"
        video = VideoClient(client, sequence_id(camera), point.codec)
        return video.detect, video, client  # closing it ends the sequence
    if mode == "ours":
        transport = make_transport(shm, client, tag, max(len(f) for f in frames))
        pipeline: Any = EnsembleClient(client, transport)
    else:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        pipeline = NaiveClient(client)
        image_bytes = 3 * INPUT_HEIGHT * INPUT_WIDTH * pipeline.input_dtype.itemsize
        pipeline.transport = transport = make_transport(shm, client, tag, image_bytes)
    return pipeline.detect, transport, client


def _camera_loop(
    detect: Callable[[bytes], Any],
    frames: Sequence[bytes],
    first: int,
    fps: float | None,
    phase: float,
    start: float,
    stop: float,
    log: CameraLog,
) -> None:
    """Send frames from ``start`` until ``stop`` (wall clock), logging into ``log``."""
    from tritonclient.utils import InferenceServerException

    interval = 1.0 / fps if fps else 0.0
    due = start + phase * interval
    index = first
    while True:
        now = time.time()
        if fps:
            if due > now:
                time.sleep(due - now)
            while time.time() - due >= interval:  # this frame's slot has passed: skip it
                log.dropped.append(due)
                due += interval
        if time.time() >= stop:
            return
        sent = time.time()
        held = False
        try:
            held = detect(frames[index % len(frames)]) is None  # a video decoder kept it
            ok = True
        except (InferenceServerException, ValueError) as exc:
            ok = False
            message = str(exc)[:300]
            if message not in log.errors and len(log.errors) < _MAX_ERRORS:
                log.errors.append(message)
        if held:
            log.held.append(time.time())
        else:
            log.sent.append(sent)
            log.done.append(time.time())
            log.ok.append(ok)
        index += 1
        due += interval


def run_cameras(
    url: str,
    frames: Sequence[bytes],
    point: LoadPoint,
    cameras: Sequence[int],
    start: float | Callable[[], float],
    window: Window,
    ready: Callable[[], None] | None = None,
) -> CameraLog:
    """Run some of a point's cameras in this process and return what they did.

    Args:
        url: Server gRPC endpoint ``host:port``.
        frames: Encoded frames; camera ``c`` starts at frame ``c`` and cycles.
        point: The load point.
        cameras: Indices (in ``range(point.cameras)``) of the cameras run here.
        start: Wall-clock start time, or a callable returning it once every worker is
            ready (see :func:`run_point`).
        window: Warm-up and window lengths.
        ready: Called once the clients are connected and warmed up.

    Returns:
        The merged log of these cameras; ``cpu_s`` covers the window only.
    """
    setups = [_request_function(point, url, str(c), frames) for c in cameras]
    for (detect, _, _), camera in zip(setups, cameras, strict=True):
        # Connect and warm this camera's path.
        detect(frames[point.first_frame(camera, len(frames))])
    if ready is not None:
        ready()
    t0 = start() if callable(start) else start
    window_start, stop = t0 + window.warmup_s, t0 + window.warmup_s + window.duration_s
    logs = [CameraLog() for _ in cameras]
    threads = [
        threading.Thread(
            target=_camera_loop,
            args=(
                detect,
                frames,
                point.first_frame(c, len(frames)),
                point.fps,
                c / point.cameras,
                t0,
                stop,
                log,
            ),
            daemon=True,
        )
        for (detect, _, _), c, log in zip(setups, cameras, logs, strict=True)
    ]
    for thread in threads:
        thread.start()
    cpu_start = _cpu_at(window_start)
    cpu_s = _cpu_at(stop) - cpu_start
    for thread in threads:
        thread.join()
    for _, transport, client in setups:
        transport.close()
        client.close()
    merged = CameraLog()
    for log in logs:
        merged.merge(log)
    merged.cpu_s = cpu_s
    return merged


def _cpu_at(moment: float) -> float:
    """This process's CPU seconds (all threads) at wall-clock ``moment``."""
    time.sleep(max(0.0, moment - time.time()))
    return time.process_time()


def worker_main(
    url: str,
    frames: Sequence[bytes],
    point: LoadPoint,
    cameras: Sequence[int],
    window: Window,
    start: Any,
    go: Any,
    results: Any,
) -> None:
    """Entry point of a worker process: report ready, wait for go, run, send the log.

    Runners that start their own workers (:mod:`camdet.perf.multi_gpu`) use it too.
    """
    try:

        def wait_for_start() -> float:
            go.wait()
            return start.value

        log = run_cameras(
            url, frames, point, cameras, wait_for_start, window, lambda: results.put("ready")
        )
        results.put(log)
    except BaseException as exc:
        results.put(RuntimeError(f"worker failed: {type(exc).__name__}: {exc}"))
        raise


# ------------------------------------------------------------------------------ points


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


@dataclass(frozen=True)
class WindowEdges:
    """The counted window in wall-clock seconds and the server samples at its edges."""

    start: float
    end: float
    statistics_before: dict[str, Any]
    statistics_after: dict[str, Any]
    server_cpu_s: float


def _sample_edges(probe: ServerProbe, t0: float, window: Window) -> WindowEdges:
    """Sample the server at the window start and end (sleeping until each)."""
    start, end = t0 + window.warmup_s, t0 + window.warmup_s + window.duration_s
    time.sleep(max(0.0, start - time.time()))
    statistics_before, cpu_before = probe.sample()
    time.sleep(max(0.0, end - time.time()))
    statistics_after, cpu_after = probe.sample()
    return WindowEdges(start, end, statistics_before, statistics_after, cpu_after - cpu_before)


@dataclass(frozen=True)
class BarePoint:
    """Description of one bare in-process run, shaped like a :class:`LoadPoint`."""

    batch: int
    preprocess: str = "opencv"
    mode: str = "bare"
    fps: None = None
    processes: int = 0
    shm: str = "none"

    @property
    def cameras(self) -> int:
        """Frames per batch (reported in the cameras column)."""
        return self.batch

    @property
    def label(self) -> str:
        """E.g. ``"bare opencv batch 4"``."""
        return f"bare {self.preprocess} batch {self.batch}"


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


def summarize(point: Any, log: CameraLog, edges: WindowEdges) -> PointResult:
    """Reduce a log and the server samples to one :class:`PointResult`.

    Args:
        point: A :class:`LoadPoint` or :class:`BarePoint`.
        log: What the cameras (or the bare loop) did.
        edges: The counted window and the server samples at its edges.
    """
    sent, done = np.asarray(log.sent, dtype=float), np.asarray(log.done, dtype=float)
    ok = np.asarray(log.ok, dtype=bool)
    inside = (done >= edges.start) & (done < edges.end)
    dropped = np.asarray(log.dropped, dtype=float)
    held = np.asarray(log.held, dtype=float)
    completed = int((inside & ok).sum())
    duration = edges.end - edges.start

    def per_frame_ms(seconds: float) -> float:
        return 1e3 * seconds / completed if completed else float("nan")

    return PointResult(
        label=point.label,
        mode=point.mode,
        cameras=point.cameras,
        fps=point.fps,
        processes=point.processes,
        shm=point.shm,
        completed=completed,
        failed=int((inside & ~ok).sum()),
        dropped=int(((dropped >= edges.start) & (dropped < edges.end)).sum()),
        held=int(((held >= edges.start) & (held < edges.end)).sum()),
        duration_s=duration,
        throughput_fps=completed / duration,
        latency=latency_summary((done - sent)[inside & ok]),
        client_cpu_ms_per_frame=per_frame_ms(log.cpu_s),
        server_cpu_ms_per_frame=per_frame_ms(edges.server_cpu_s),
        model_stats=model_stats_delta(edges.statistics_before, edges.statistics_after),
        errors=log.errors,
    )
