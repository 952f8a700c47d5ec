"""Where answered frames go: JSON Lines, an annotated MP4 per camera, or a callback.

Sinks receive every answered frame on the event loop thread, each camera's in the order
its frames were sent (see :mod:`camdet.client.streamer`), so ``write`` must be quick:
the video sink hands frames to its own encoder thread. ``close`` flushes and releases.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import cv2
import numpy as np
from camdet.client.reader import CapturedFrame

from camdet.contract import Detection
from camdet.tracking.lines import CountLine

logger = logging.getLogger(__name__)

_MS = Fraction(1, 1000)  # video time base: capture times in milliseconds (variable rate)
_PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48))


@dataclass(frozen=True)
class Result:
    """One answered frame.

    Attributes:
        frame: The captured frame (camera, index, capture time, pixels or bytes).
        detections: Its detections, boxes in the frame's own pixels.
        latency_s: Read (the client took the frame from the camera) to answer, seconds.
        server: URL of the server that answered.
        damaged: The server decoded the frame with concealed damage (corrupt JPEG data):
            its detections may miss or misplace objects in the damaged part.
    """

    frame: CapturedFrame
    detections: list[Detection]
    latency_s: float
    server: str
    damaged: bool = False

    @property
    def lag_s(self) -> float:
        """Capture (the stream's clock for live streams) to answer: how far behind live."""
        return self.latency_s + self.frame.capture_delay_s

    def record(self) -> dict[str, Any]:
        """The JSON Lines record of the frame.

        ``captured_at`` and ``latency_ms`` count from when the client read the frame;
        ``capture_ts`` and ``lag_ms`` from when the camera captured it (they differ when
        frames waited in the socket: a back-pressured live camera).
        """
        size = self.frame.size()
        return {
            "camera": self.frame.camera_id,
            "frame": self.frame.index,
            "session": self.frame.session,
            "position": self.frame.position,
            "pts": None if self.frame.pts_s is None else round(self.frame.pts_s, 6),
            "captured_at": round(self.frame.captured_at, 6),
            "latency_ms": round(self.latency_s * 1000.0, 2),
            "capture_ts": round(self.frame.capture_ts, 6),
            "lag_ms": round(self.lag_s * 1000.0, 2),
            "width": None if size is None else size[0],
            "height": None if size is None else size[1],
            "server": self.server,
            "damaged": self.damaged,
            "detections": [d.as_dict() for d in self.detections],
        }


class Sink(Protocol):
    """Receives answered frames."""

    def write(self, result: Result) -> None:
        """Take one answered frame (event loop thread; must not block)."""

    def close(self) -> None:
        """Flush and release; no writes follow."""


class JsonLinesSink:
    """One JSON object per answered frame (see :meth:`Result.record`), flushed per line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")

    def write(self, result: Result) -> None:
        """Append the frame's record."""
        self._file.write(json.dumps(result.record(), separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class CallbackSink:
    """Calls ``callback(result)`` for every answered frame (embedding API)."""

    def __init__(self, callback: Callable[[Result], None]) -> None:
        self.callback = callback

    def write(self, result: Result) -> None:
        """Call the callback."""
        self.callback(result)

    def close(self) -> None:
        """Nothing to release."""


def camera_file_name(camera_id: str) -> str:
    """A file name stem for a camera id (characters other than ``[A-Za-z0-9_.-]`` -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", camera_id)


def annotate(
    image_rgb: np.ndarray,
    detections: list[Detection],
    count_line: CountLine | None = None,
    counts: Mapping[str, int] | None = None,
) -> np.ndarray:
    """A copy of the frame with each detection's box, label and score drawn on it.

    Tracked detections are labelled ``#<track id>`` first and coloured by track, so an
    object keeps its colour while it keeps its id; untracked ones are coloured by class.
    A count line is drawn with its ``in``/``out`` counts next to its first end point.
    """
    canvas = np.ascontiguousarray(image_rgb).copy()
    if count_line is not None:
        _draw_count_line(canvas, count_line, counts or {})
    for detection in detections:
        tracked = detection.track_id is not None
        key = detection.track_id if tracked else detection.class_id
        color = _PALETTE[key % len(_PALETTE)]
        x1, y1, x2, y2 = (round(v) for v in detection.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, 2)
        prefix = f"#{detection.track_id} " if tracked else ""
        cv2.putText(
            canvas,
            f"{prefix}{detection.label} {detection.score:.2f}",
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            color,
            1,
            cv2.LINE_AA,
        )
    return canvas


def _draw_count_line(canvas: np.ndarray, line: CountLine, counts: Mapping[str, int]) -> None:
    """The count line (white on black, so it shows on any scene) and its counts, in place."""
    start, end = (round(line.x1), round(line.y1)), (round(line.x2), round(line.y2))
    cv2.line(canvas, start, end, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.line(canvas, start, end, (255, 255, 255), 2, cv2.LINE_AA)
    text = f"in {counts.get('in', 0)}  out {counts.get('out', 0)}"
    origin = (max(2, start[0] + 4), max(16, start[1] - 6))
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(
        canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA
    )


class _VideoWriter:
    """An H.264 MP4 with variable frame rate: each frame at its capture time."""

    def __init__(self, path: Path, width: int, height: int, crf: int) -> None:
        self.size = (width - width % 2, height - height % 2)  # yuv420p needs even sides
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=30)
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = _MS
        self.stream.options = {"preset": "veryfast", "crf": str(crf)}
        self._last_ms: int | None = None

    def write(self, image_rgb: np.ndarray, t_ms: int) -> bool:
        """Encode a frame at ``t_ms``; False (skipped) if not after the previous one."""
        if self._last_ms is not None and t_ms <= self._last_ms:
            return False
        if (image_rgb.shape[1], image_rgb.shape[0]) != self.size:
            image_rgb = cv2.resize(image_rgb, self.size, interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(image_rgb, format="rgb24")
        frame.pts, frame.time_base = t_ms, _MS
        self.container.mux(self.stream.encode(frame))
        self._last_ms = t_ms
        return True

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


class AnnotatedVideoSink:
    """``<folder>/<camera>.mp4`` per camera: answered frames with their detections drawn.

    Frames are timed by capture time, so the video plays at the rate frames were
    answered. Decoding passthrough JPEGs, drawing and encoding run in a worker thread;
    frames are skipped (counted in :attr:`skipped`) when it falls ``max_pending`` behind
    or when an answer arrives after a later frame's.
    """

    def __init__(self, folder: Path, crf: int = 23, max_pending: int = 256) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.crf = crf
        self.skipped = 0
        self.written = 0
        self._warned_undecoded = False
        self._queue: queue.Queue[Result | None] = queue.Queue(max_pending)
        self._writers: dict[str, tuple[_VideoWriter, float]] = {}
        self._thread = threading.Thread(target=self._work, name="video-sink", daemon=True)
        self._thread.start()

    def path(self, camera_id: str) -> Path:
        """The MP4 of a camera."""
        return self.folder / f"{camera_file_name(camera_id)}.mp4"

    def write(self, result: Result) -> None:
        """Queue the frame for the encoder thread (access units have no pixels: skipped)."""
        if result.frame.video is not None:
            if not self._warned_undecoded:
                self._warned_undecoded = True
                logger.warning(
                    "video sink: H.264/HEVC passes through undecoded; decode on the "
                    "client to write annotated videos"
                )
            self.skipped += 1
            return
        try:
            self._queue.put_nowait(result)
        except queue.Full:
            self.skipped += 1

    def close(self) -> None:
        """Encode what is queued, then finish every file."""
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        try:
            while (result := self._queue.get()) is not None:
                try:
                    self._encode(result)
                except Exception:
                    self.skipped += 1
                    logger.exception("video sink: cannot write %s", result.frame.camera_id)
        finally:
            for writer, _ in self._writers.values():
                writer.close()

    def _encode(self, result: Result) -> None:
        frame = result.frame
        image = annotate(frame.rgb(), result.detections)
        if frame.camera_id not in self._writers:
            writer = _VideoWriter(
                self.path(frame.camera_id), image.shape[1], image.shape[0], self.crf
            )
            self._writers[frame.camera_id] = (writer, frame.captured_mono)
        writer, origin = self._writers[frame.camera_id]
        if writer.write(image, round((frame.captured_mono - origin) * 1000)):
            self.written += 1
        else:
            self.skipped += 1
