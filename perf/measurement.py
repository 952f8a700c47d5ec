"""What one load point (or bare-loop run) is, what its cameras log, and what it measured.

:class:`LoadPoint` and :class:`BarePoint` say what is measured, :class:`Window` when;
the cameras (:mod:`camdet.perf.cameras`) fill a :class:`CameraLog`, and
:func:`summarize` reduces it, with the server samples at the :class:`WindowEdges`, to
one :class:`PointResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from camdet.perf.stats import latency_summary, model_stats_delta

MODES = ("ours", "naive", "video")
"""Pipelines a load point can drive through the server (see :mod:`camdet.perf.pipelines`)."""

MAX_ERRORS = 5
"""Distinct error messages kept per worker."""


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
        gop: Video only: the clip's keyframe interval in frames, over which the cameras'
            keyframes are spread, as independent cameras' streams are out of step (see
            :meth:`lead_in`). 0 keeps every camera's keyframe in the same frame slot, as
            the bench did until session 22 (on the H100 both gave the same p99 at 70 % of
            the peak, perf/RESULTS.md).
    """

    mode: str
    cameras: int
    fps: float | None = None
    processes: int = 1
    shm: str = "none"
    torch_threads: int | None = None
    codec: str = "h264"
    gop: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.cameras < 1 or self.processes < 0 or (self.fps is not None and self.fps <= 0):
            raise ValueError(f"invalid load point {self}")
        if self.gop < 0:
            raise ValueError(f"gop must be >= 0, got {self.gop}")
        if self.mode == "video" and self.shm != "none":
            raise ValueError("video cameras send their access units over gRPC (shm none)")

    def first_frame(self, camera: int, num_frames: int) -> int:
        """Where camera ``camera`` starts in ``num_frames`` frames.

        A video stream starts at its keyframe; a JPEG camera at its own frame, wrapping
        around (cameras outnumber frames at scale).
        """
        return 0 if self.mode == "video" else camera % num_frames

    def lead_in(self, camera: int) -> int:
        """Frames camera ``camera`` sends before its clock starts, in order, from its first.

        A video camera ``c`` of ``n`` sends ``c * gop // n`` of its stream's frames ahead,
        so the cameras' keyframes fall evenly over the GOP's frame slots instead of all
        in one: at 192 cameras in step, every camera's keyframe arrived within one frame
        interval of the others', once per GOP. A JPEG camera sends none.
        """
        return camera * self.gop // self.cameras if self.mode == "video" else 0

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``"ours 4 cam @ 5 fps"``."""
        rate = f" @ {self.fps:g} fps" if self.fps else ""
        in_step = " keyframes in step" if self.mode == "video" and not self.gop else ""
        return f"{self.mode} {self.cameras} cam{rate}{in_step}"


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
        self.errors += [e for e in other.errors if e not in self.errors][:MAX_ERRORS]


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


@dataclass(frozen=True)
class WindowEdges:
    """The counted window in wall-clock seconds and the server samples at its edges."""

    start: float
    end: float
    statistics_before: dict[str, Any]
    statistics_after: dict[str, Any]
    server_cpu_s: float


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
