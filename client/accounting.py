"""Per-camera frame accounting: every captured frame ends answered, dropped or failed.

A frame is *captured* when the reader takes it from the camera (after any target-fps
decimation) and is *in flight* from then until it is answered by the server, dropped
(stale in real-time mode, or left over at shutdown) or failed (the request failed, e.g.
because the server went away). Each transition moves one frame between two counters
under a single lock, so at every instant, for every camera::

    captured == answered + dropped + failed + in_flight
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from camdet.client.lag import DEFAULT_LAG_WARNING_S, LagAlarm

LATENCY_WINDOW_S = 10.0
"""Latency percentiles cover the answers of this many most recent seconds."""

_MAX_LATENCY_SAMPLES = 2048  # per camera, so a fast camera cannot grow the window unbounded


@dataclass(frozen=True)
class CameraTotals:
    """Counters of one camera at one instant.

    Attributes:
        captured: Frames taken from the camera.
        answered: Frames whose detections came back.
        dropped: Frames discarded before being sent (stale, or left over at shutdown).
        failed: Frames whose request failed (server error or unavailable).
        in_flight: Frames queued or being processed by the server right now.
        reconnects: Times the camera connection was re-opened after a failure or an end.
        damaged: Answered frames the server flagged as damaged (counted in ``answered``).
        latency_p50_s: Median end-to-end latency over the recent window, seconds (None
            before the first answer).
        latency_p99_s: 99th percentile of the same, seconds.
        lag_s: How far behind live the camera's latest answer was: capture (the stream's
            clock for live streams) to answer, seconds (None before the first answer).
    """

    captured: int = 0
    answered: int = 0
    dropped: int = 0
    failed: int = 0
    in_flight: int = 0
    reconnects: int = 0
    damaged: int = 0
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    lag_s: float | None = None

    @property
    def balanced(self) -> bool:
        """Whether ``captured == answered + dropped + failed + in_flight``."""
        return self.captured == self.answered + self.dropped + self.failed + self.in_flight


@dataclass
class _Counters:
    captured: int = 0
    answered: int = 0
    dropped: int = 0
    failed: int = 0
    in_flight: int = 0
    reconnects: int = 0
    damaged: int = 0
    lag_s: float | None = None
    latencies: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=_MAX_LATENCY_SAMPLES)
    )


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values.

    Args:
        sorted_values: Non-empty, ascending.
        q: Quantile in [0, 1].
    """
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


class Accounting:
    """Thread-safe frame counters of every camera (reader threads and the event loop)."""

    def __init__(
        self,
        camera_ids: list[str] | tuple[str, ...] = (),
        lag_warning_s: float = DEFAULT_LAG_WARNING_S,
    ) -> None:
        self._lock = threading.Lock()
        self._cameras: dict[str, _Counters] = {}
        self._lag_warning_s = lag_warning_s
        self._alarms: dict[str, LagAlarm] = {}
        for camera_id in camera_ids:
            self.register(camera_id)

    def register(self, camera_id: str) -> None:
        """Start counting a camera (idempotent)."""
        with self._lock:
            self._cameras.setdefault(camera_id, _Counters())
            self._alarms.setdefault(camera_id, LagAlarm(camera_id, self._lag_warning_s))

    def captured(self, camera_id: str) -> None:
        """A frame was taken from the camera: it is in flight now."""
        with self._lock:
            counters = self._cameras[camera_id]
            counters.captured += 1
            counters.in_flight += 1

    def answered(self, camera_id: str, latency_s: float, damaged: bool = False) -> None:
        """An in-flight frame got its detections ``latency_s`` seconds after capture.

        ``damaged``: the server flagged the frame as decoded with concealed damage.
        """
        with self._lock:
            counters = self._cameras[camera_id]
            counters.in_flight -= 1
            counters.answered += 1
            counters.damaged += damaged
            counters.lag_s = latency_s
            counters.latencies.append((time.monotonic(), latency_s))
        self._alarms[camera_id].observe(latency_s)

    def dropped(self, camera_id: str, count: int = 1) -> None:
        """In-flight frames were discarded without being sent."""
        with self._lock:
            counters = self._cameras[camera_id]
            counters.in_flight -= count
            counters.dropped += count

    def failed(self, camera_id: str) -> None:
        """An in-flight frame's request failed."""
        with self._lock:
            counters = self._cameras[camera_id]
            counters.in_flight -= 1
            counters.failed += 1

    def reconnected(self, camera_id: str) -> None:
        """The camera connection is being re-opened."""
        with self._lock:
            self._cameras[camera_id].reconnects += 1

    def snapshot(self) -> dict[str, CameraTotals]:
        """Consistent counters of every camera, taken under one lock."""
        horizon = time.monotonic() - LATENCY_WINDOW_S
        with self._lock:
            return {
                camera_id: _totals(counters, horizon)
                for camera_id, counters in self._cameras.items()
            }


def _totals(counters: _Counters, horizon: float) -> CameraTotals:
    recent = sorted(latency for at, latency in counters.latencies if at >= horizon)
    return CameraTotals(
        captured=counters.captured,
        answered=counters.answered,
        dropped=counters.dropped,
        failed=counters.failed,
        in_flight=counters.in_flight,
        reconnects=counters.reconnects,
        damaged=counters.damaged,
        latency_p50_s=percentile(recent, 0.5) if recent else None,
        latency_p99_s=percentile(recent, 0.99) if recent else None,
        lag_s=counters.lag_s,
    )
