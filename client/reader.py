"""Per-camera reader threads: source -> decimation -> bounded buffer, with reconnects.

PyAV decoding blocks, so each camera is read in its own thread. Frames reach the event
loop through a :class:`FrameBuffer`: in real-time mode a full buffer evicts its oldest
frame (counted as dropped), in capacity mode the reader waits for room (back-pressure).
H.264/HEVC access units cannot be evicted one by one (later pictures refer to earlier
ones), so a full real-time buffer drops whole rests of GOPs instead: up to the next
keyframe. Access units are never decimated either, for the same reason.
A failing or ending live camera is re-opened with exponential backoff; the other
cameras never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
from camdet.client.accounting import Accounting
from camdet.client.backoff import Backoff, BackoffPolicy
from camdet.client.capture_clock import StreamClock
from camdet.client.config import CameraConfig
from camdet.client.demux import AccessUnit
from camdet.client.sources import Source, SourceError, SourceFrame

from camdet.scenes.jpeg import encode_jpeg
from camdet.steps.validate.image_check import ImageCheckError, check_encoded_image

logger = logging.getLogger(__name__)

_PTS_TOLERANCE_S = 1e-3  # float error of pts / fps arithmetic when decimating


@dataclass(frozen=True)
class CapturedFrame:
    """A frame taken from a camera, with where and when it came from.

    Attributes:
        camera_id: The camera.
        index: Per-camera capture counter, 0-based, across reconnects and loops.
        session: Connection that delivered frames (or file pass) the frame came from,
            0-based; failed connection attempts are not sessions.
        position: Index of the frame within its session before decimation (for a file
            or an unshared RTSP stream of a file: the frame's index in the file).
        pts_s: Presentation time from the stream, seconds, or None.
        captured_at: Wall-clock capture time, seconds since the epoch.
        captured_mono: ``time.monotonic()`` at capture, for end-to-end latency.
        encoded: JPEG/PNG bytes as the camera delivered them, or None.
        image: ``[H, W, 3]`` uint8 RGB frame when the source decoded, or None.
        video: The H.264/HEVC access unit of a stream that passes through, or None.
        capture_mono: When the camera captured the frame, on the ``time.monotonic()``
            clock, from the stream's own clock (live streams with presentation times;
            see :mod:`camdet.client.capture_clock`), or None: captured when read.
    """

    camera_id: str
    index: int
    session: int
    position: int
    pts_s: float | None
    captured_at: float
    captured_mono: float
    encoded: bytes | None
    image: np.ndarray | None
    video: AccessUnit | None = None
    capture_mono: float | None = None

    @property
    def capture_delay_s(self) -> float:
        """How long the frame waited between capture and read (back-pressure), seconds."""
        return 0.0 if self.capture_mono is None else self.captured_mono - self.capture_mono

    @property
    def capture_ts(self) -> float:
        """Wall-clock capture time, seconds since the epoch (``captured_at`` is read time)."""
        return self.captured_at - self.capture_delay_s

    def jpeg(self, quality: int) -> bytes:
        """The bytes to send: the camera's own encoding, else a JPEG of ``image``."""
        if self.encoded is not None:
            return self.encoded
        return encode_jpeg(self.image, quality)

    def rgb(self) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB pixels (decodes passthrough frames).

        Raises:
            ValueError: If the camera's bytes cannot be decoded, or for an access unit
                (decoded by the server only).
        """
        if self.image is not None:
            return self.image
        if self.video is not None:
            raise ValueError(
                f"{self.camera_id} frame {self.index}: {self.video.codec} passes through "
                "undecoded; decode on the client to get pixels"
            )
        bgr = cv2.imdecode(np.frombuffer(self.encoded, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{self.camera_id} frame {self.index}: undecodable image")
        return np.ascontiguousarray(bgr[..., ::-1])

    def size(self) -> tuple[int, int] | None:
        """``(width, height)`` in pixels, from the pixels or the encoded header."""
        if self.image is not None:
            return self.image.shape[1], self.image.shape[0]
        if self.video is not None:
            return self.video.width, self.video.height
        try:
            info = check_encoded_image(self.encoded, 1 << 40, 1 << 20)
        except ImageCheckError:
            return None
        return info.width, info.height


class FrameBuffer:
    """Bounded hand-over of frames from a reader thread to the event loop.

    Args:
        capacity: Most frames held.
        drop_oldest: Real-time mode: a full buffer evicts its oldest frame (access
            units: see :meth:`_put_access_unit`). Otherwise (capacity mode) :meth:`put`
            blocks until there is room.
        loop: The event loop that calls :meth:`get`.
        video_capacity: Most access units held in real-time mode (None: ``capacity``);
            larger than ``capacity`` because an overflow costs the rest of a GOP.
    """

    def __init__(
        self,
        capacity: int,
        drop_oldest: bool,
        loop: asyncio.AbstractEventLoop,
        video_capacity: int | None = None,
    ) -> None:
        if capacity < 1 or (video_capacity is not None and video_capacity < 1):
            raise ValueError(f"capacities must be >= 1, got {capacity}, {video_capacity}")
        self.capacity = capacity
        self.video_capacity = video_capacity or capacity
        self.drop_oldest = drop_oldest
        self._loop = loop
        self._items: deque[CapturedFrame] = deque()
        self._room = threading.Condition()
        self._closed = False
        self._skipping_gop = False
        self._ready = asyncio.Event()

    def put(self, frame: CapturedFrame) -> list[CapturedFrame]:
        """Add a frame (reader thread).

        Returns:
            The frames that did not stay: evicted ones (real-time mode), or ``[frame]``
            itself if the buffer is closed.
        """
        with self._room:
            if not self.drop_oldest:
                while len(self._items) >= self.capacity and not self._closed:
                    self._room.wait()
            if self._closed:
                return [frame]
            if frame.video is not None and self.drop_oldest:
                evicted = self._put_access_unit(frame)
            else:
                evicted = []
                while len(self._items) >= self.capacity:
                    evicted.append(self._items.popleft())
                self._items.append(frame)
        self._wake_loop()
        return evicted

    def _put_access_unit(self, frame: CapturedFrame) -> list[CapturedFrame]:
        """Real-time mode for access units: what overflows is the rest of a GOP.

        Dropping a run of frames keeps the stream decodable only if the run ends right
        before a keyframe. So a non-keyframe arriving at a full buffer is dropped together
        with every later one up to the next keyframe; a keyframe arriving at a full buffer
        replaces everything held (frames right before it).
        """
        keyframe = frame.video is not None and frame.video.keyframe
        full = len(self._items) >= self.video_capacity
        if not keyframe:
            if full or self._skipping_gop:
                self._skipping_gop = True
                return [frame]
            self._items.append(frame)
            return []
        self._skipping_gop = False
        evicted = list(self._items) if full else []
        if full:
            self._items.clear()
        self._items.append(frame)
        return evicted

    def close(self) -> None:
        """No more frames: :meth:`get` returns None once empty; blocked puts give up."""
        with self._room:
            self._closed = True
            self._room.notify_all()
        self._wake_loop()

    def take_all(self) -> list[CapturedFrame]:
        """Remove and return every frame still held (for shutdown accounting)."""
        with self._room:
            items = list(self._items)
            self._items.clear()
            self._room.notify_all()
        return items

    async def get(self) -> CapturedFrame | None:
        """The oldest frame, waiting for one; None when closed and empty."""
        while True:
            with self._room:
                if self._items:
                    frame = self._items.popleft()
                    self._room.notify_all()
                    return frame
                if self._closed:
                    return None
                self._ready.clear()
            await self._ready.wait()

    def __len__(self) -> int:
        with self._room:
            return len(self._items)

    def _wake_loop(self) -> None:
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ready.set)


class Decimator:
    """Keeps frames at most ``fps`` per second (all of them when ``fps`` is None)."""

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else None
        self._due: float | None = None

    def keep(self, t: float) -> bool:
        """Whether the frame at time ``t`` (seconds, any origin) is kept."""
        if self.period is None:
            return True
        if self._due is not None and t < self._due - _PTS_TOLERANCE_S:
            return False
        # Stay on the grid, unless the stream jumped ahead (stall, reconnect).
        on_grid = self._due is not None and t - self._due < self.period
        self._due = (self._due if on_grid else t) + self.period
        return True

    def reset(self) -> None:
        """Forget the previous session's clock."""
        self._due = None


class CameraReader:
    """The thread reading one camera into its buffer, reconnecting with backoff.

    Args:
        camera: The camera.
        source: Its source.
        buffer: Where frames go.
        accounting: Counts captured, evicted and rejected frames and reconnects.
        reconnect: Backoff between sessions after a failure or a live stream's end.
    """

    def __init__(
        self,
        camera: CameraConfig,
        source: Source,
        buffer: FrameBuffer,
        accounting: Accounting,
        reconnect: BackoffPolicy,
    ) -> None:
        self.camera = camera
        self.source = source
        self.buffer = buffer
        self.accounting = accounting
        self._backoff = Backoff(reconnect)
        self._stop = threading.Event()
        self._next_index = 0
        self._delivered = False
        self._warned_fps = False
        self._clock = StreamClock()
        self.last_error: str | None = None
        """Why the latest session failed (None: none has)."""
        self._thread = threading.Thread(target=self._run, name=f"camera-{camera.id}", daemon=True)

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop after the current frame (or wait)."""
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the thread; True if it has ended."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def finished(self) -> bool:
        """Whether the thread has ended."""
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._read_sessions()
        except Exception:
            logger.exception("camera %s: reader crashed", self.camera.id)
        finally:
            self.buffer.close()

    def _read_sessions(self) -> None:
        # Sessions are numbered by connections that delivered frames: a failed
        # reconnect attempt is no session.
        session = 0
        while not self._stop.is_set():
            clean_end = self._read_session(session)
            if self._delivered:
                session += 1
            if self._stop.is_set():
                return
            if clean_end and not self.source.live:
                if not self.camera.loop:
                    logger.info("camera %s: end of %s", self.camera.id, self.camera.url)
                    return
            else:
                if self._delivered:
                    self._backoff.reset()
                delay = self._backoff.next_delay()
                logger.warning("camera %s: reconnecting in %.1f s", self.camera.id, delay)
                self.accounting.reconnected(self.camera.id)
                if self._stop.wait(delay):
                    return

    def _read_session(self, session: int) -> bool:
        """Read one session; True if it ended at the end of the stream."""
        self._delivered = False
        decimator = Decimator(self.camera.fps)
        self._clock.reset()
        frames = self.source.session()
        try:
            for frame in frames:
                if self._stop.is_set():
                    return True
                now = time.monotonic()
                t = frame.pts_s if frame.pts_s is not None and not self.source.live else now
                if frame.video is not None:
                    # Access units depend on each other: the server decodes every one.
                    self._warn_undecimated()
                    self._capture(frame, session, now)
                    self._delivered = True
                elif decimator.keep(t):
                    self._capture(frame, session, now)
                    self._delivered = True
        except SourceError as error:
            self.last_error = str(error)
            logger.warning("camera %s: %s", self.camera.id, error)
            return False
        except Exception as error:
            # Whatever else a camera or FFmpeg throws, this camera reconnects and the
            # others go on.
            self.last_error = f"unexpected error: {error!r}"
            logger.exception("camera %s: unexpected error", self.camera.id)
            return False
        finally:
            frames.close()
        return True

    def _warn_undecimated(self) -> None:
        if self.camera.fps and not self._warned_fps:
            self._warned_fps = True
            logger.warning(
                "camera %s: fps=%g is ignored, H.264/HEVC passes through whole; "
                "decode on the client to decimate",
                self.camera.id,
                self.camera.fps,
            )

    def _capture(self, frame: SourceFrame, session: int, now: float) -> None:
        captured = CapturedFrame(
            camera_id=self.camera.id,
            index=self._next_index,
            session=session,
            position=frame.position,
            pts_s=frame.pts_s,
            captured_at=time.time(),
            captured_mono=now,
            encoded=frame.encoded,
            image=frame.rgb(),
            video=frame.video,
            capture_mono=self._clock.capture_time(frame.pts_s, now) if self.source.live else None,
        )
        self._next_index += 1
        self.accounting.captured(self.camera.id)
        left_out = self.buffer.put(captured)
        if left_out:
            self.accounting.dropped(self.camera.id, len(left_out))
