"""Per-camera tracking in the client: a ``track_id`` on every answered detection.

Answers of all cameras reach the event loop, each camera's in the order its frames were
sent (:mod:`camdet.client.streamer` holds an early answer back for its predecessors:
the tracker only moves forward in time); each camera gets its own
:class:`~camdet.tracking.bytetrack.ByteTracker` here (why here and not on the server: see
:mod:`camdet.tracking` and the model card). Both paths feed it: ``detect`` answers (JPEG)
and ``detect_video`` answers (H.264/HEVC pass-through), after their frames are resolved,
with each box's colour as the server read it (the tracker's appearance cue).

- Frames skipped between two answers (real-time drops, a server outage and fail-over,
  decimation) advance the motion model by the gap in the camera's frame positions, so
  tracks coast through them and keep their ids for up to ``max_age`` frames.
- A new camera session (reconnect, next pass of a looping file) ends every track: the
  objects may have moved anywhere meanwhile. Ids keep counting up, never reused, so a
  track is keyed by ``(camera, track_id)`` for the whole client run.
- A late answer from an older session (frames still in flight at the reconnect, or at
  the end of a looping file's pass) gets no ids and changes no track and no count: its
  tracks have ended, and taking it as a restart would end the current session's too.
- An answer that still arrives after a later frame's (a caller of :class:`Tracking` that
  does not keep the order) is labelled from the current tracks without changing them.
- With a count line, tracks crossing it are counted per camera and direction; the side
  of a track is forgotten when the tracker ends it (after ``max_age`` frames unseen).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from itertools import count

import numpy as np
from camdet.client.reader import CapturedFrame
from camdet.client.sinks import Result

from camdet.contract import Detection, detection_colors
from camdet.tracking.bytetrack import NO_TRACK, ByteTracker, TrackerSettings
from camdet.tracking.lines import DIRECTIONS, CountLine, LineCounter


@dataclass
class _CameraTracks:
    tracker: ByteTracker
    counter: LineCounter | None
    session: int | None = None
    newest_index: int = -1  # capture index of the newest frame tracked
    position: int | None = None  # its position in the session, for the time step

    def track(self, frame: CapturedFrame, detections: list[Detection]) -> np.ndarray:
        """``[N]`` int64 track ids of one answered frame's detections, NO_TRACK where none."""
        boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        if self.session is not None and frame.session < self.session:
            # Its tracks ended at the reconnect; the current session's must not.
            return np.full(len(boxes), NO_TRACK, dtype=np.int64)
        if frame.session != self.session:
            self._restart(frame.session)
        if frame.index < self.newest_index:
            return self.tracker.label(boxes)
        step = 1 if self.position is None else frame.position - self.position
        scores = np.array([d.score for d in detections], dtype=np.float64)
        class_ids = np.array([d.class_id for d in detections], dtype=np.int64)
        ids = self.tracker.update(
            boxes, scores, class_ids, max(step, 1), detection_colors(detections)
        )
        self.newest_index, self.position = frame.index, frame.position
        if self.counter is not None:
            self.counter.update(ids, boxes)
            self.counter.retain(t.track_id for t in self.tracker.tracks if t.confirmed)
        return ids

    def _restart(self, session: int) -> None:
        self.tracker.reset()
        if self.counter is not None:
            self.counter.forget()
        self.session, self.newest_index, self.position = session, -1, None


@dataclass
class Tracking:
    """Tracks of every camera, updated from answered frames.

    Args:
        settings: ByteTrack's thresholds.
        count_line: Count tracks crossing this line (pixels of each camera's frames).
    """

    settings: TrackerSettings = field(default_factory=TrackerSettings)
    count_line: CountLine | None = None
    _cameras: dict[str, _CameraTracks] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, result: Result) -> Result:
        """The answered frame with a ``track_id`` on each detection (None: no track).

        None: not (yet) a confirmed track, or an answer from an older camera session.
        Call once per answered frame, in the order the frames were sent (the event
        loop does).
        """
        camera = self._camera(result.frame.camera_id)
        with self._lock:
            ids = camera.track(result.frame, result.detections)
        tracked = [
            replace(d, track_id=None if i == NO_TRACK else int(i))
            for d, i in zip(result.detections, ids, strict=True)
        ]
        return replace(result, detections=tracked)

    def crossings(self) -> dict[str, dict[str, int]]:
        """Line crossings so far: ``{camera: {"in": n, "out": n}}`` (empty without a line)."""
        with self._lock:
            return {
                camera_id: {d: camera.counter.counts[d] for d in DIRECTIONS}
                for camera_id, camera in self._cameras.items()
                if camera.counter is not None
            }

    def _camera(self, camera_id: str) -> _CameraTracks:
        with self._lock:
            camera = self._cameras.get(camera_id)
            if camera is None:
                # One id counter per camera across sessions: an id is never reused.
                tracker = ByteTracker(self.settings, ids=count(1))
                counter = None if self.count_line is None else LineCounter(self.count_line)
                camera = self._cameras[camera_id] = _CameraTracks(tracker, counter)
            return camera
