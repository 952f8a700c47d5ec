"""One Triton sequence per camera: access units to ``detect_video`` in order, answers by id.

A camera's H.264/HEVC stream is decoded by a stateful decoder on the server, so its
requests form one Triton sequence (correlation id :func:`sequence_id`), sent in order,
one at a time: unary requests in flight together may reach the server out of order, and
a decoder fed out of order produces garbage.

The sequence starts (``sequence_start``) with a keyframe, after every (re)connect of the
camera, after the server went away and when the camera moved to another server; frames
before that keyframe are dropped and counted. A response answers the frame whose id it
echoes (``frame_pts``), which on streams with B-frames is an earlier one than the
request's own; a frame the decoder never returns (a corrupt picture, leading pictures it
skipped) fails after :data:`MAX_DECODER_LAG` more requests. At the end (a stop or a new
camera session) the decoder is flushed and the sequence ended (``sequence_end``).

Frame accounting: a frame is in flight from capture until its id comes back (answered),
it is dropped before sending, or its request or sequence fails (failed). A stop that cuts
the sequence short (:meth:`VideoSequence.leave`) leaves the frames sent and not answered
in flight: the stop is no failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from camdet.client.accounting import Accounting
from camdet.client.backoff import Backoff, BackoffPolicy
from camdet.client.reader import CapturedFrame
from camdet.client.servers import Endpoint, ServerPool, is_server_failure
from camdet.client.sinks import Result

from camdet.contract import (
    NO_FRAME,
    VIDEO_ENSEMBLE,
    Detection,
    parse_video_result,
    video_inputs,
    video_outputs,
)

logger = logging.getLogger(__name__)

MAX_DECODER_LAG = 16
"""Requests after which a frame the decoder has not returned counts as failed (H.264 and
HEVC reorder at most 16 pictures)."""

TOO_MANY_CAMERAS = "too many cameras"
"""Start of the server's error when it has no decoder left for another camera."""

SEQUENCE_LOST = ("START flag", "has no decoder")
"""Errors saying the server no longer knows the sequence (Triton's, after a restart
between two requests; the model's, after an idle expiry): start again at a keyframe."""

START_RETRY = BackoffPolicy(1.0, 10.0)
"""Waits before a camera the server turned away tries to start its sequence again."""


def sequence_id(camera_id: str) -> int:
    """The camera's Triton correlation id: stable, in ``[1, 2**63)``.

    0 means "no sequence" to Triton, and tritonclient sends integer ids as int64
    parameters (a uint64 above ``2**63 - 1`` fails with "Value out of range").
    """
    digest = hashlib.blake2b(camera_id.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1


def sequence_ids(camera_ids: Iterable[str]) -> dict[str, int]:
    """The correlation id of every camera.

    Raises:
        ValueError: If two cameras hash to the same id (then rename one).
    """
    ids: dict[str, int] = {}
    owners: dict[int, str] = {}
    for camera_id in camera_ids:
        value = sequence_id(camera_id)
        if value in owners:
            raise ValueError(f"cameras {owners[value]!r} and {camera_id!r} share sequence id")
        ids[camera_id], owners[value] = value, camera_id
    return ids


@dataclass(frozen=True)
class SequenceSettings:
    """What every request of a sequence carries.

    Attributes:
        thresholds: Request parameters overriding the server's thresholds.
        request_timeout_s: Deadline of each request, seconds.
    """

    thresholds: Mapping[str, float | int]
    request_timeout_s: float


@dataclass
class _Pending:
    frame: CapturedFrame
    request: int  # number of the request that sent it, for MAX_DECODER_LAG


Route = Callable[[CapturedFrame], Awaitable[Endpoint | None]]


class VideoSequence:
    """The ``detect_video`` sequence of one camera.

    Args:
        camera_id: The camera.
        correlation_id: Its :func:`sequence_id`.
        pool: The servers.
        route: The server for a frame, or None when the frame was dropped or failed
            instead (already counted).
        accounting: The frame counters.
        deliver: Gets every answered frame.
        settings: Thresholds and deadline.
    """

    def __init__(
        self,
        camera_id: str,
        correlation_id: int,
        pool: ServerPool,
        route: Route,
        accounting: Accounting,
        deliver: Callable[[Result], None],
        settings: SequenceSettings,
    ) -> None:
        self.camera_id = camera_id
        self.correlation_id = correlation_id
        self._pool = pool
        self._route = route
        self._accounting = accounting
        self._deliver = deliver
        self._settings = settings
        self._endpoint: Endpoint | None = None  # where the open sequence lives; None: closed
        self._session: int | None = None
        self._codec: str | None = None
        self._skipping = False  # dropping until a keyframe
        self._pending: dict[int, _Pending] = {}
        self._requests = 0
        self._start_backoff = Backoff(START_RETRY)
        self._start_after = 0.0

    @property
    def open(self) -> bool:
        """Whether a sequence is open on a server."""
        return self._endpoint is not None

    async def send(self, frame: CapturedFrame) -> None:
        """Send one access unit (or drop it, counted) and resolve the frames answered."""
        unit = frame.video
        assert unit is not None, "only access units travel in a video sequence"
        if self.open and (frame.session != self._session or unit.codec != self._codec):
            await self.end()
        self._session = frame.session
        endpoint = await self._route(frame)
        if endpoint is None:
            self._skipping = True
            return
        if self.open and endpoint != self._endpoint:
            self.abandon(f"moved to {endpoint.url}")
        if unit.keyframe:
            self._skipping = False
        startable = unit.keyframe and time.monotonic() >= self._start_after
        if self._skipping or not (self.open or startable):
            self._skipping = True
            self._accounting.dropped(self.camera_id)
            return
        await self._request(endpoint, frame, start=not self.open)

    async def end(self) -> None:
        """Flush the decoder, end the sequence; frames it does not return fail."""
        endpoint = self._endpoint
        try:
            if endpoint is not None and self._pool.is_up(endpoint):
                await self._flush(endpoint)
        except asyncio.CancelledError:  # a stop cut the flush short
            self.leave()
            raise
        except Exception as error:
            logger.debug("camera %s: ending its sequence failed: %s", self.camera_id, error)
        self.abandon("sequence ended")

    def abandon(self, why: str) -> None:
        """Forget the open sequence: frames still in the decoder fail; next: a keyframe."""
        if self._pending:
            logger.debug("camera %s: %d frames lost: %s", self.camera_id, len(self._pending), why)
        for _ in self._pending:
            self._accounting.failed(self.camera_id)
        self._pending.clear()
        self._endpoint = None
        self._skipping = True

    def leave(self) -> None:
        """Forget the open sequence at a stop: frames sent and not answered stay in flight."""
        if self._pending:
            logger.debug("camera %s: %d frames left in flight", self.camera_id, len(self._pending))
        self._pending.clear()
        self._endpoint = None
        self._skipping = True

    async def _request(self, endpoint: Endpoint, frame: CapturedFrame, start: bool) -> None:
        unit = frame.video
        self._requests += 1
        self._pending[frame.index] = _Pending(frame, self._requests)
        try:
            frame_pts, detections = await self._infer(
                endpoint, unit.data, frame.index, unit.codec, start=start
            )
        except asyncio.CancelledError:  # a stop: the frame stays pending until leave()
            raise
        except Exception as error:
            self._fail(frame.index)
            self._on_error(endpoint, frame, error, start)
            return
        if start:
            self._endpoint, self._codec = endpoint, unit.codec
            self._start_backoff.reset()
        self._answer(frame_pts, detections, endpoint)
        self._expire()

    async def _infer(
        self,
        endpoint: Endpoint,
        data: bytes,
        pts: int,
        codec: str,
        start: bool = False,
        end: bool = False,
    ) -> tuple[int, list[Detection]]:
        parameters = {"codec": codec, **self._settings.thresholds}
        response = await self._pool.client(endpoint).infer(
            VIDEO_ENSEMBLE,
            video_inputs(data, pts),
            outputs=video_outputs(),
            sequence_id=self.correlation_id,
            sequence_start=start,
            sequence_end=end,
            parameters=parameters,
            client_timeout=self._settings.request_timeout_s,
        )
        return parse_video_result(response)

    async def _flush(self, endpoint: Endpoint) -> None:
        """Empty bytes flush the decoder: one frame per response, then the end."""
        codec = self._codec or "h264"
        for _ in range(MAX_DECODER_LAG):
            if not self._pending:
                break
            frame_pts, detections = await self._infer(endpoint, b"", NO_FRAME, codec)
            if frame_pts == NO_FRAME:
                break
            self._answer(frame_pts, detections, endpoint)
        frame_pts, detections = await self._infer(endpoint, b"", NO_FRAME, codec, end=True)
        self._answer(frame_pts, detections, endpoint)

    def _on_error(
        self, endpoint: Endpoint, frame: CapturedFrame, error: Exception, start: bool
    ) -> None:
        if is_server_failure(error):
            # One line per outage comes from the pool; the sequence died with the server.
            self._pool.report_failure(endpoint, error)
            self.abandon(f"server failed: {error}")
            logger.debug("camera %s frame %d failed: %s", self.camera_id, frame.index, error)
            return
        logger.warning("camera %s frame %d failed: %s", self.camera_id, frame.index, error)
        text = str(error)
        if TOO_MANY_CAMERAS in text:
            self.abandon("server turned the camera away")
            self._start_after = time.monotonic() + self._start_backoff.next_delay()
        elif any(lost in text for lost in SEQUENCE_LOST):
            self.abandon("the server lost the sequence")
        elif start:
            self._skipping = True  # not started: start again at the next keyframe

    def _answer(self, frame_pts: int, detections: list[Detection], endpoint: Endpoint) -> None:
        if frame_pts == NO_FRAME:
            return
        pending = self._pending.pop(frame_pts, None)
        if pending is None:
            logger.debug("camera %s: answer for unknown frame %d", self.camera_id, frame_pts)
            return
        frame = pending.frame
        latency = time.monotonic() - frame.captured_mono
        self._accounting.answered(self.camera_id, latency + frame.capture_delay_s)
        self._deliver(Result(frame, detections, latency, endpoint.url))

    def _fail(self, index: int) -> None:
        if self._pending.pop(index, None) is not None:
            self._accounting.failed(self.camera_id)

    def _expire(self) -> None:
        """Frames the decoder should have returned by now and never will."""
        for index in [
            i for i, p in self._pending.items() if p.request <= self._requests - MAX_DECODER_LAG
        ]:
            logger.debug("camera %s frame %d: never decoded", self.camera_id, index)
            self._fail(index)
