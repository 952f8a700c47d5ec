"""The view's :class:`~camdet.client.sinks.Sink`: annotated pictures of watched cameras only.

``write`` runs on the event loop for every answered frame of every camera. For a camera
nobody watches it returns at once: nothing is decoded, drawn or encoded. For a watched
camera, a frame is rendered (:func:`~camdet.client.view.annotate.render`) at most ``fps``
times a second, in the camera's own worker thread; H.264/HEVC access units are decoded
there, every one while watched (later pictures refer to earlier ones), and only the
due ones are drawn and encoded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from camdet.client.sinks import Result
from camdet.client.view.annotate import AccessUnitDecoder, render

from camdet.tracking.lines import CountLine

logger = logging.getLogger(__name__)

MAX_PENDING_UNITS = 64
"""Access units queued for a watched camera's decoder before it skips to a keyframe."""


@dataclass(frozen=True)
class Picture:
    """A camera's latest annotated picture.

    Attributes:
        jpeg: The JPEG bytes.
        seq: Per-camera counter, 1-based: a page sends a picture it has not sent yet.
        index: Capture index of the frame shown.
        captured_at: Its wall-clock capture time, seconds since the epoch.
    """

    jpeg: bytes
    seq: int
    index: int
    captured_at: float


class _Tile:
    """One camera's watchers, pending frames, decoder and latest picture."""

    def __init__(self) -> None:
        self.watchers = 0
        self.cond = threading.Condition()
        self.units: deque[Result] = deque()
        self.latest: Result | None = None
        self.gap = False
        self.due = 0.0
        self.picture: Picture | None = None
        self.decoder = AccessUnitDecoder()
        self.recent: dict[int, Result] = {}  # access units' answers, until decoded
        self.thread: threading.Thread | None = None


class ViewSink:
    """Renders watched cameras' answered frames for the page.

    Args:
        fps: Most pictures per second per camera.
        max_width: Widest picture, pixels.
        count_line: The count line drawn on every camera (frame pixels), or None.
        counts: Crossings so far, ``{camera: {"in": n, "out": n}}`` (set by the view).
    """

    def __init__(
        self,
        fps: float = 5.0,
        max_width: int = 640,
        count_line: CountLine | None = None,
        counts: Callable[[], Mapping[str, Mapping[str, int]]] = dict,
    ) -> None:
        if fps <= 0 or max_width < 16:
            raise ValueError(f"view: fps must be > 0 and width >= 16, got {fps}, {max_width}")
        self.period_s = 1.0 / fps
        self.max_width = max_width
        self.count_line = count_line
        self.counts = counts
        self.rendered = 0
        self.decoded = 0
        self._tiles: dict[str, _Tile] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _tile(self, camera_id: str) -> _Tile:
        with self._lock:
            return self._tiles.setdefault(camera_id, _Tile())

    def watch(self, camera_id: str) -> None:
        """A page started watching the camera: render its frames from now on."""
        tile = self._tile(camera_id)
        with tile.cond:
            tile.watchers += 1
            if tile.thread is None and not self._closed:
                tile.thread = threading.Thread(
                    target=self._work, args=(tile,), name=f"view-{camera_id}", daemon=True
                )
                tile.thread.start()

    def unwatch(self, camera_id: str) -> None:
        """A page stopped watching the camera (when none watches, nothing is rendered)."""
        tile = self._tile(camera_id)
        with tile.cond:
            tile.watchers = max(0, tile.watchers - 1)
            if not tile.watchers:
                tile.units.clear()
                tile.latest = None
                tile.gap = True  # the decoder restarts at a keyframe when watched again
                tile.cond.notify()

    def watchers(self, camera_id: str) -> int:
        """How many pages watch the camera."""
        tile = self._tiles.get(camera_id)
        return 0 if tile is None else tile.watchers

    def picture(self, camera_id: str) -> Picture | None:
        """The camera's latest picture (None before the first one)."""
        tile = self._tiles.get(camera_id)
        return None if tile is None else tile.picture

    def write(self, result: Result) -> None:
        """Hand a watched camera's frame to its worker; others return at once."""
        tile = self._tiles.get(result.frame.camera_id)
        if tile is None or not tile.watchers:
            return
        with tile.cond:
            if result.frame.video is not None:
                if len(tile.units) >= MAX_PENDING_UNITS:
                    tile.units.clear()
                    tile.gap = True
                tile.units.append(result)
            elif time.monotonic() >= tile.due:
                tile.latest = result
            else:
                return
            tile.cond.notify()

    def close(self) -> None:
        """Stop every worker."""
        with self._lock:
            self._closed = True
            tiles = list(self._tiles.values())
        for tile in tiles:
            with tile.cond:
                tile.cond.notify()
        for tile in tiles:
            if tile.thread is not None:
                tile.thread.join(5.0)

    def _work(self, tile: _Tile) -> None:
        while True:
            with tile.cond:
                while not (self._closed or tile.units or tile.latest or tile.gap):
                    tile.cond.wait()
                if self._closed:
                    return
                units, tile.units = list(tile.units), deque()
                latest, tile.latest = tile.latest, None
                gap, tile.gap = tile.gap, False
            try:
                self._process(tile, units, latest, gap)
            except Exception:
                logger.exception("view: cannot render a frame")

    def _process(self, tile: _Tile, units: list[Result], latest: Result | None, gap: bool) -> None:
        if gap:
            tile.decoder.reset()
        if latest is not None:
            self._publish(tile, latest, latest.frame.rgb())
        for result in units:
            assert result.frame.video is not None
            tile.recent[result.frame.index] = result
            for key, frame in tile.decoder.decode(result.frame.video, result.frame.index):
                self.decoded += 1
                shown = tile.recent.pop(key, None)
                if shown is not None and time.monotonic() >= tile.due:
                    self._publish(tile, shown, frame.to_ndarray(format="rgb24"))
            if len(tile.recent) > 32:  # pictures a decoder never gave back (a gap)
                for key in sorted(tile.recent)[:-16]:
                    del tile.recent[key]

    def _publish(self, tile: _Tile, result: Result, image: np.ndarray) -> None:
        camera_id = result.frame.camera_id
        counts = self.counts().get(camera_id) if self.count_line is not None else None
        jpeg = render(image, result.detections, self.max_width, self.count_line, counts)
        seq = 1 if tile.picture is None else tile.picture.seq + 1
        tile.picture = Picture(jpeg, seq, result.frame.index, result.frame.capture_ts)
        tile.due = time.monotonic() + self.period_s
        self.rendered += 1
