"""One decoder per camera, with limits, idle expiry and a FIFO of decoded frames.

Each camera is one Triton sequence (correlation id). Every request carries one access
unit and gets exactly one frame back: the oldest frame the camera's decoder has produced
and nobody has received yet, or none while the decoder still holds everything (B-frame
reordering). Memory is bounded per camera (``max_pixels`` per frame, ``max_queued_frames``
frames in the FIFO plus the decoder's own reference frames) and in total
(``max_cameras`` decoders).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

import numpy as np

from camdet.steps.video.annexb import CODECS, AccessUnitError, inspect_access_unit
from camdet.steps.video.decoders import (
    DecodedFrame,
    Decoder,
    DecoderUnavailableError,
    VideoDecodeError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

SEQUENCE_START, SEQUENCE_END = 1, 2
"""Triton's request flags (``TRITONSERVER_REQUEST_FLAG_SEQUENCE_START/END``)."""


class VideoRequestError(ValueError):
    """A request the pool refuses; the message is the client's error text (one line)."""


@dataclass(frozen=True)
class PoolLimits:
    """Limits of one pool (one model instance), from the model config's parameters.

    Attributes:
        max_cameras: Open decoders at most; one more START is refused.
        max_pixels: Largest coded frame (width x height, pixels) a stream may declare.
        max_side: Largest width or height, pixels.
        max_queued_frames: Decoded frames kept per camera; older ones are dropped.
        idle_timeout_s: A camera without requests for this long loses its decoder.
    """

    max_cameras: int
    max_pixels: int
    max_side: int
    max_queued_frames: int
    idle_timeout_s: float


@dataclass
class CameraStream:
    """One camera's decoder, its undelivered frames, and why it may be waiting."""

    codec: str
    last_used: float
    decoder: Decoder | None = None
    frames: deque[DecodedFrame] = field(default_factory=deque)
    waiting_for: str = "stream must start with a keyframe"
    cause: str = "invalid video"
    """What a request refused for ``waiting_for`` is told first (the error's prefix)."""
    starved: bool = False
    """The GPU had no decoder for it and none has decoded since (logged once, not per GOP)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while this camera decodes: cameras decode in parallel, one at a time each."""

    def drop_decoder(self, wait: tuple[str, str]) -> None:
        """Close the decoder (if any) until the next keyframe; the caller holds ``lock``.

        Args:
            wait: The camera's ``(cause, waiting_for)`` until then.
        """
        if self.decoder is not None:
            self.decoder.close()
            self.decoder = None
        self.cause, self.waiting_for = wait

    def close(self) -> None:
        """Free the decoder and the queued frames (waits for a decode in progress)."""
        with self.lock:
            if self.decoder is not None:
                self.decoder.close()
            self.decoder = None
            self.frames.clear()


class DecoderPool:
    """The cameras of one model instance; thread-safe.

    The pool's lock guards only which cameras exist; each camera decodes under its own
    lock, so a batch's cameras can decode in parallel threads (NVDEC runs several
    sessions at once; PyAV releases the GIL while it decodes). Locks are always taken
    pool first, then camera, never the other way round.
    """

    def __init__(
        self,
        open_decoder: Callable[[str], Decoder],
        limits: PoolLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start with no camera.

        Args:
            open_decoder: Makes a decoder for a codec name (``"h264"``/``"hevc"``).
            limits: The pool's limits.
            clock: Seconds, monotonic (tests pass a fake one).
        """
        self.open_decoder = open_decoder
        self.limits = limits
        self.clock = clock
        self.cameras: dict[int, CameraStream] = {}
        self.lock = threading.Lock()

    def __len__(self) -> int:
        """Open cameras."""
        return len(self.cameras)

    def submit(
        self, camera: int, flags: int, codec: str | None, chunk: np.ndarray, pts: int
    ) -> DecodedFrame | None:
        """Decode one request's access unit and answer with the camera's oldest frame.

        Args:
            camera: Correlation id of the sequence.
            flags: Triton request flags (``SEQUENCE_START``, ``SEQUENCE_END``).
            codec: ``codec`` request parameter (required with ``SEQUENCE_START``).
            chunk: ``[n]`` uint8, one Annex-B access unit; empty = flush the decoder.
            pts: The client's pts of this access unit.

        Returns:
            The oldest undelivered frame, or None if the decoder holds all it has.

        Raises:
            VideoRequestError: With the client's error text; the camera then waits for
                the next keyframe if its decoder failed.
        """
        with self.lock:
            self._expire_locked()
            stream = self._start(camera, codec) if flags & SEQUENCE_START else self._get(camera)
            stream.last_used = self.clock()
        try:
            with stream.lock:
                self._feed(stream, chunk, pts)
                return stream.frames.popleft() if stream.frames else None
        finally:
            if flags & SEQUENCE_END:
                self._end(camera, stream)

    def _end(self, camera: int, stream: CameraStream) -> None:
        """Close a camera whose sequence ended (unless a new START replaced it already)."""
        with self.lock:
            if self.cameras.get(camera) is stream:
                del self.cameras[camera]
        stream.close()

    def expire(self) -> list[int]:
        """Close the cameras idle for longer than the timeout; their ids."""
        with self.lock:
            return self._expire_locked()

    def close(self) -> None:
        """Close every camera (model unload)."""
        with self.lock:
            for stream in self.cameras.values():
                stream.close()
            self.cameras.clear()

    def _expire_locked(self) -> list[int]:
        deadline = self.clock() - self.limits.idle_timeout_s
        idle = [c for c, s in self.cameras.items() if s.last_used < deadline]
        for camera in idle:
            self.cameras.pop(camera).close()
            logger.info(
                "camera %d idle for %.0f s: decoder freed", camera, self.limits.idle_timeout_s
            )
        return idle

    def _start(self, camera: int, codec: str | None) -> CameraStream:
        if codec not in CODECS:
            raise VideoRequestError(
                f"unsupported codec {codec!r} (use h264 or hevc)"
                if codec
                else "the START request of a sequence needs the 'codec' parameter (h264 or hevc)"
            )
        previous = self.cameras.pop(camera, None)
        if previous is not None:  # a reconnecting camera starts from scratch
            previous.close()
        if len(self.cameras) >= self.limits.max_cameras:
            raise VideoRequestError(
                f"too many cameras: {len(self.cameras) + 1} open decoders exceed "
                f"max_cameras={self.limits.max_cameras}"
            )
        stream = CameraStream(codec, self.clock())
        self.cameras[camera] = stream
        return stream

    def _get(self, camera: int) -> CameraStream:
        stream = self.cameras.get(camera)
        if stream is None:
            raise VideoRequestError(
                f"camera {camera} has no decoder (never started, refused, ended or idle "
                f"longer than {self.limits.idle_timeout_s:.0f} s): send a START request "
                "with a keyframe"
            )
        return stream

    def _feed(self, stream: CameraStream, chunk: np.ndarray, pts: int) -> None:
        """Decode one access unit (or flush) into the camera's FIFO."""
        if chunk.size == 0:
            if stream.decoder is not None:
                # Draining ends the decoder's stream: decoding resumes at a keyframe.
                self._queue(stream, self._run(stream, stream.decoder.flush))
                stream.drop_decoder(_FLUSHED)
            return
        try:
            unit = inspect_access_unit(chunk.tobytes(), stream.codec)
        except AccessUnitError as exc:
            self._fail(stream, f"invalid video: corrupt access unit ({exc})", _CORRUPT)
        if unit.size is not None:
            self._check_size(stream, *unit.size)
        if stream.decoder is None:
            if not unit.keyframe:
                raise VideoRequestError(
                    f"{stream.cause}: {stream.waiting_for} ({_keyframe_name(stream.codec)})"
                )
            stream.decoder = self._run(stream, lambda: self.open_decoder(stream.codec))
        decoder = stream.decoder
        self._queue(stream, self._run(stream, lambda: decoder.decode(chunk, pts)))
        if stream.starved:
            stream.starved = False
            logger.info("a camera has its decoder again")

    def _run(self, stream: CameraStream, step: Callable[[], T]) -> T:
        """Run a decoder step; a failure fails this request and the camera's decoder."""
        try:
            return step()
        except DecoderUnavailableError as exc:
            # The server's limit, not the stream's: the operator needs to see it too, once
            # per camera (it retries at every keyframe).
            if not stream.starved:
                logger.warning("no decoder for a camera: %s", exc)
            stream.starved = True
            self._fail(stream, f"decoder unavailable: {exc}", _UNAVAILABLE)
        except VideoDecodeError as exc:
            self._fail(stream, f"invalid video: corrupt access unit ({exc})", _CORRUPT)

    def _fail(self, stream: CameraStream, message: str, wait: tuple[str, str]) -> NoReturn:
        """Drop the decoder (its references are damaged, or it never started).

        The next keyframe restarts it; until then ``wait`` is the camera's ``cause`` and
        ``waiting_for``.
        """
        stream.drop_decoder(wait)
        raise VideoRequestError(f"{message}; waiting for the next keyframe")

    def _check_size(self, stream: CameraStream, height: int, width: int) -> None:
        limits = self.limits
        if height * width > limits.max_pixels or max(height, width) > limits.max_side:
            stream.drop_decoder(_TOO_LARGE)
            raise VideoRequestError(
                f"video too large: {width}x{height} exceeds max_pixels={limits.max_pixels} "
                f"or max_side={limits.max_side}"
            )

    def _queue(self, stream: CameraStream, frames: list[DecodedFrame]) -> None:
        stream.frames.extend(frames)
        dropped = len(stream.frames) - self.limits.max_queued_frames
        for _ in range(max(dropped, 0)):
            # Only a client that sends flushes or skips requests gets here.
            logger.warning("dropping frame pts=%d: FIFO full", stream.frames.popleft().pts)


# A camera's (cause, waiting_for) while it has no decoder, until its next keyframe.
_CORRUPT = ("invalid video", "waiting for the next keyframe after a corrupt access unit")
_FLUSHED = ("invalid video", "flushed: decoding resumes at the next keyframe")
_TOO_LARGE = ("invalid video", "waiting for a keyframe of a smaller stream")
_UNAVAILABLE = (
    "decoder unavailable",
    "the GPU had none for this camera; retried at the next keyframe",
)


def _keyframe_name(codec: str) -> str:
    return "h264 IDR with SPS/PPS" if codec == "h264" else "hevc IRAP with VPS/SPS/PPS"
