"""How cameras are streamed: the ingest's mode and options (:class:`IngestOptions`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from camdet.client.backoff import BackoffPolicy
from camdet.client.servers import PROBE_BACKOFF
from camdet.client.sources import DEFAULT_TIMEOUTS, Timeouts

from camdet.tracking.lines import CountLine

RECONNECT_BACKOFF = BackoffPolicy(0.5, 10.0)
"""Camera reconnects: from 0.5 s up to every 10 s."""


class Mode(StrEnum):
    """What to do when the server is slower than the cameras."""

    REALTIME = "realtime"
    """Drop stale frames (counted) so latency stays bounded."""
    CAPACITY = "capacity"
    """Drop nothing; the readers are back-pressured."""


@dataclass(frozen=True)
class IngestOptions:
    """How cameras are streamed.

    Attributes:
        mode: Real-time or capacity.
        max_in_flight: Most outstanding requests per camera (H.264/HEVC cameras: always
            one, their sequence must reach the server in order).
        queue_size: Frames buffered per camera between reader and sender (None: 1 in
            real-time mode, ``max_in_flight`` in capacity mode).
        video_queue_size: Real-time mode: access units buffered per H.264/HEVC camera
            before the rest of a GOP is dropped.
        decode_on_client: Decode H.264/HEVC on the client and send JPEGs to ``detect``
            (servers without ``detect_video``); False: pass access units through.
        max_frame_age_s: Real-time mode: frames older than this when their turn to be sent
            comes are dropped, seconds.
        jpeg_quality: JPEG quality for frames the camera did not deliver as JPEG, 1-100.
        request_timeout_s: Deadline of each request, seconds.
        drain_timeout_s: At shutdown, how long to wait for buffered and in-flight frames.
        thresholds: Per-request threshold parameters (see
            :func:`camdet.contract.threshold_parameters`).
        reconnect: Backoff between camera reconnects.
        server_probe: Backoff between probes of a server that is down.
        timeouts: Camera network timeouts.
        track: Give detections per-camera track ids (:mod:`camdet.client.tracks`).
        count_line: Count tracks crossing this line, per camera (implies ``track``).
    """

    mode: Mode = Mode.REALTIME
    max_in_flight: int = 2
    queue_size: int | None = None
    video_queue_size: int = 8
    decode_on_client: bool = False
    max_frame_age_s: float = 2.0
    jpeg_quality: int = 90
    request_timeout_s: float = 30.0
    drain_timeout_s: float = 10.0
    thresholds: Mapping[str, float | int] = field(default_factory=dict)
    reconnect: BackoffPolicy = RECONNECT_BACKOFF
    server_probe: BackoffPolicy = PROBE_BACKOFF
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    track: bool = True
    count_line: CountLine | None = None

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.queue_size is not None and self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.video_queue_size < 1:
            raise ValueError(f"video_queue_size must be >= 1, got {self.video_queue_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    @property
    def buffer_size(self) -> int:
        """Frames buffered per camera."""
        if self.queue_size is not None:
            return self.queue_size
        return 1 if self.mode is Mode.REALTIME else self.max_in_flight
