"""ByteTrack: multi-object tracking by associating every detection box, per camera.

Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection Box"
(ECCV 2022). Each frame, the Kalman-predicted tracks are matched by IoU to the confident
detections first, then the tracks left over to the weak detections (a half-occluded
object scores low, and dropping it would break its track); tracks unmatched for
:attr:`TrackerSettings.max_age` frames end. A new object is confirmed, and gets its id,
when it is matched again in the next frame, so one-frame false positives use no id.
Assignment is the linear assignment problem, solved by ``lap.lapjv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

import lap
import numpy as np

from camdet.tracking.kalman import BoxKalman

NO_TRACK = -1
"""Track id of a detection that belongs to no confirmed track."""


@dataclass(frozen=True)
class TrackerSettings:
    """ByteTrack's thresholds (its published defaults; frames at the camera's own rate).

    Attributes:
        high_score: Detections at or above this score are matched first.
        low_score: Detections below it are ignored; between the two they only extend
            existing tracks.
        new_track_score: Least score of an unmatched detection that starts a track.
        match_iou: Least IoU of a confident detection with a predicted track box.
        low_match_iou: Least IoU of a weak detection with a predicted track box.
        confirm_iou: Least IoU that confirms a new track in its second frame.
        max_age: Frames a track survives unmatched (occlusions, missed detections).
    """

    high_score: float = 0.5
    low_score: float = 0.1
    new_track_score: float = 0.6
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    confirm_iou: float = 0.3
    max_age: int = 30

    def __post_init__(self) -> None:
        if not 0 <= self.low_score <= self.high_score <= 1:
            raise ValueError(f"need 0 <= low_score <= high_score <= 1, got {self}")
        if self.max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {self.max_age}")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of boxes.

    Args:
        a: ``[N, 4]`` ``x1, y1, x2, y2`` in pixels.
        b: ``[M, 4]`` the same.

    Returns:
        ``[N, M]`` float64 IoU in ``[0, 1]``.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def match(track_boxes: np.ndarray, boxes: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Optimal one-to-one matching by IoU.

    Args:
        track_boxes: ``[N, 4]`` predicted track boxes, pixels.
        boxes: ``[M, 4]`` detection boxes, pixels.
        min_iou: Pairs below this IoU are never matched.

    Returns:
        ``(track index, box index)`` pairs maximising the total IoU.
    """
    if len(track_boxes) == 0 or len(boxes) == 0:
        return []
    cost = 1.0 - box_iou(track_boxes, boxes)
    _, rows, _ = lap.lapjv(cost, extend_cost=True, cost_limit=1.0 - min_iou)
    return [(int(t), int(d)) for t, d in enumerate(rows) if d >= 0]


@dataclass
class Track:
    """One tracked object.

    Attributes:
        kalman: Its motion state.
        class_id: Class of its latest detection.
        track_id: Its id, or :data:`NO_TRACK` until confirmed.
        last_seen: Tracker frame of its latest detection.
    """

    kalman: BoxKalman
    class_id: int
    track_id: int = NO_TRACK
    last_seen: int = 0

    @property
    def confirmed(self) -> bool:
        """Whether the track has an id."""
        return self.track_id != NO_TRACK


@dataclass
class ByteTracker:
    """Tracks of one camera. Feed frames in order with :meth:`update`.

    Args:
        settings: Thresholds.
        ids: Source of new track ids (shared across restarts so ids are never reused).
    """

    settings: TrackerSettings = field(default_factory=TrackerSettings)
    ids: count = field(default_factory=lambda: count(1))
    tracks: list[Track] = field(default_factory=list)
    frame: int = 0

    def update(
        self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, dt: int = 1
    ) -> np.ndarray:
        """Advance by ``dt`` frames and associate one frame's detections.

        Args:
            boxes: ``[N, 4]`` ``x1, y1, x2, y2`` in frame pixels.
            scores: ``[N]`` confidences in ``[0, 1]``.
            class_ids: ``[N]`` class indices.
            dt: Frames since the previous update (>= 1; more when frames were skipped).

        Returns:
            ``[N]`` int64 track id of each detection, :data:`NO_TRACK` where none.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        first = self.frame == 0
        self.frame += max(int(dt), 1)
        for track in self.tracks:
            track.kalman.predict(max(int(dt), 1))
        ids = np.full(len(boxes), NO_TRACK, dtype=np.int64)
        strong = scores >= self.settings.high_score
        high = np.flatnonzero(strong)
        low = np.flatnonzero((scores >= self.settings.low_score) & ~strong)
        confirmed = [t for t in self.tracks if t.confirmed]
        left = self._associate(confirmed, high, boxes, class_ids, ids, self.settings.match_iou)
        recent = [t for t in left if t.last_seen == self.frame - max(int(dt), 1)]
        self._associate(recent, low, boxes, class_ids, ids, self.settings.low_match_iou)
        fresh = [t for t in self.tracks if not t.confirmed]
        unused = high[ids[high] == NO_TRACK]
        unconfirmed_left = self._associate(
            fresh, unused, boxes, class_ids, ids, self.settings.confirm_iou, confirm=True
        )
        self.tracks = [t for t in self.tracks if t not in unconfirmed_left]
        self._start(boxes, scores, class_ids, ids, first)
        self.tracks = [t for t in self.tracks if self.frame - t.last_seen <= self.settings.max_age]
        return ids

    def _associate(
        self,
        tracks: list[Track],
        candidates: np.ndarray,
        boxes: np.ndarray,
        class_ids: np.ndarray,
        ids: np.ndarray,
        min_iou: float,
        confirm: bool = False,
    ) -> list[Track]:
        """Match tracks to the candidate detections, update them; return the unmatched."""
        pairs = match(np.array([t.kalman.box for t in tracks]), boxes[candidates], min_iou)
        for t, d in pairs:
            track, index = tracks[t], int(candidates[d])
            track.kalman.update(boxes[index])
            track.class_id, track.last_seen = int(class_ids[index]), self.frame
            if confirm:
                track.track_id = next(self.ids)
            ids[index] = track.track_id
        matched = {t for t, _ in pairs}
        return [track for i, track in enumerate(tracks) if i not in matched]

    def _start(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        class_ids: np.ndarray,
        ids: np.ndarray,
        first: bool,
    ) -> None:
        """New tracks from confident unmatched detections; confirmed at once in frame 1."""
        for index in np.flatnonzero((ids == NO_TRACK) & (scores >= self.settings.new_track_score)):
            track = Track(BoxKalman(boxes[index]), int(class_ids[index]), last_seen=self.frame)
            if first:
                track.track_id = next(self.ids)
                ids[index] = track.track_id
            self.tracks.append(track)

    def label(self, boxes: np.ndarray) -> np.ndarray:
        """Ids for a frame that arrived after a later one, without changing any track.

        Args:
            boxes: ``[N, 4]`` ``x1, y1, x2, y2`` in frame pixels.

        Returns:
            ``[N]`` int64 ids of the confirmed tracks they overlap best, else
            :data:`NO_TRACK`.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        confirmed = [t for t in self.tracks if t.confirmed]
        ids = np.full(len(boxes), NO_TRACK, dtype=np.int64)
        track_boxes = np.array([t.kalman.box for t in confirmed])
        for t, d in match(track_boxes, boxes, self.settings.match_iou):
            ids[d] = confirmed[t].track_id
        return ids

    def reset(self) -> None:
        """End every track (a new camera session); ids keep counting up."""
        self.tracks.clear()
        self.frame = 0
