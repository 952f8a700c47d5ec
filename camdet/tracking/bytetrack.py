"""ByteTrack: multi-object tracking by associating every detection box, per camera.

Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection Box"
(ECCV 2022). Each frame, the Kalman-predicted tracks are matched by IoU to the confident
detections first, then the tracks left over to the weak detections (a half-occluded
object scores low, and dropping it would break its track); tracks unmatched for
:attr:`TrackerSettings.max_age` frames end. A new object is confirmed, and gets its id,
when it is matched again in the next frame, so one-frame false positives use no id.
Assignment is the linear assignment problem, solved by ``lap.lapjv``.

Where detections carry colours (the mean RGB of each box's centre, which the
``postprocess`` model reads from the letterboxed frame on the GPU:
:func:`camdet.steps.postprocess.detections.box_colors`), each track keeps a smoothed colour, as
DeepSORT-style trackers keep an appearance embedding: it weighs in IoU matching, and a lost
track takes back only a detection of its colour. Without colours, motion alone decides.
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
        recover_distance: Largest distance, in sizes (larger sides) of the track's box,
            between a lost track's predicted centre and a confident detection of about
            its size that takes it back (0: no recovery). An object coming out from
            behind an occluder shows first as a sliver cut at the occluder's edge, while
            its track, whose speed was underestimated from the boxes clipped on the way
            in, predicts a whole box about one width behind: IoU alone starts a new id
            (camdet's pillar scenes: IDF1 0.38; MODEL_CARD.md, Tracking). Distance and
            size are measured against the largest box of the track's last
            :attr:`size_memory` observations, not its clipped box on the way in.
        recover_size_ratio: Least ratio of a recovered detection's size to that largest
            box (up to 2): an object coming out shows first as a sliver.
        size_memory: Observations of a track whose largest box is its size in recovery.
        direction_weight: Weight of the velocity-direction cost in IoU matching
            (:func:`direction_cost`; OC-SORT's 0.2), 0 for IoU alone.
        shape_weight: Weight of the aspect-ratio cost in IoU matching
            (:func:`shape_cost`): where one object hides another at a crossing, the one
            detection left matches the track of its own shape (pillar scenes: 1.08 ->
            0.65 switches per 1,000 object-frames), 0 for IoU alone.
        color_gate: Largest distance between a track's colour and a detection's, RGB in
            ``[0, 1]`` (Euclidean), for a lost track to take the detection back; also
            the distance at which the colour cost is full. The scenes' lighting moves an
            object's colour from its mean by 0.08-0.19 (95th percentile); the nearest
            other object's is 0.28 or more away (MODEL_CARD.md, Tracking).
        color_weight: Weight of the colour cost in IoU matching (:func:`color_cost`).
        color_momentum: Share of a track's colour kept at each observation (the
            exponential moving average of JDE/FairMOT's appearance embeddings).
    """

    high_score: float = 0.5
    low_score: float = 0.1
    new_track_score: float = 0.6
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    confirm_iou: float = 0.3
    max_age: int = 30
    recover_distance: float = 3.0
    recover_size_ratio: float = 0.3
    size_memory: int = 30
    direction_weight: float = 0.2
    shape_weight: float = 0.3
    color_gate: float = 0.25
    color_weight: float = 0.5
    color_momentum: float = 0.9

    def __post_init__(self) -> None:
        if not 0 <= self.low_score <= self.high_score <= 1:
            raise ValueError(f"need 0 <= low_score <= high_score <= 1, got {self}")
        if self.max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {self.max_age}")
        if self.recover_distance < 0:
            raise ValueError(f"recover_distance must be >= 0, got {self.recover_distance}")
        if not 0 < self.recover_size_ratio <= 1:
            raise ValueError(f"recover_size_ratio must be in (0, 1], got {self.recover_size_ratio}")
        if self.size_memory < 1:
            raise ValueError(f"size_memory must be >= 1, got {self.size_memory}")
        if self.color_gate <= 0:
            raise ValueError(f"color_gate must be > 0, got {self.color_gate}")
        if not 0 <= self.color_momentum < 1:
            raise ValueError(f"color_momentum must be in [0, 1), got {self.color_momentum}")


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


def match(
    track_boxes: np.ndarray,
    boxes: np.ndarray,
    min_iou: float,
    extra_cost: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """Optimal one-to-one matching by IoU.

    Args:
        track_boxes: ``[N, 4]`` predicted track boxes, pixels.
        boxes: ``[M, 4]`` detection boxes, pixels.
        min_iou: Pairs below this IoU are never matched.
        extra_cost: ``[N, M]`` added to ``1 - IoU`` for the choice among the pairs that
            pass ``min_iou`` (e.g. :func:`direction_cost`), or None.

    Returns:
        ``(track index, box index)`` pairs minimising the total cost.
    """
    if len(track_boxes) == 0 or len(boxes) == 0:
        return []
    iou = box_iou(track_boxes, boxes)
    cost = 1.0 - iou + (0.0 if extra_cost is None else extra_cost)
    cost = np.where(iou >= min_iou, cost, _NEVER)
    _, rows, _ = lap.lapjv(cost, extend_cost=True, cost_limit=_NEVER - 1.0)
    return [(int(t), int(d)) for t, d in enumerate(rows) if d >= 0]


_NEVER = 1e6
"""Cost of a pair that must not be matched."""


def _centres(boxes: np.ndarray) -> np.ndarray:
    """``[N, 2]`` centres of ``[N, 4]`` ``x1, y1, x2, y2`` boxes, pixels."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def direction_cost(tracks: list[Track], boxes: np.ndarray, weight: float) -> np.ndarray:
    """OC-SORT's velocity-direction consistency as a matching cost.

    Cao et al., "Observation-Centric SORT" (CVPR 2023): a detection that would take a
    track back the way it came costs more. Two objects crossing head-on overlap, and IoU
    alone can hand each the other's id for a frame or two.

    Args:
        tracks: The tracks (their velocity and last observed box).
        boxes: ``[M, 4]`` detection boxes, pixels.
        weight: Cost of a detection straight behind the track (0 for one straight ahead).

    Returns:
        ``[N, M]`` costs in ``[0, weight]``; 0 for tracks without an observation or speed.
    """
    cost = np.zeros((len(tracks), len(boxes)))
    centres = _centres(boxes)
    for row, track in enumerate(tracks):
        velocity = track.kalman.mean[4:6]
        speed = float(np.linalg.norm(velocity))
        if track.observed is None or speed < 1.0:
            continue
        step = centres - _centres(track.observed[None])[0]
        norms = np.maximum(np.linalg.norm(step, axis=1), 1e-9)
        cosine = step @ velocity / (norms * speed)
        cost[row] = weight * (1.0 - cosine) / 2.0
    return cost


def shape_cost(tracks: list[Track], boxes: np.ndarray, weight: float) -> np.ndarray:
    """The difference of a detection's aspect ratio from a track's as a matching cost.

    Args:
        tracks: The tracks (their Kalman aspect ratio, width / height).
        boxes: ``[M, 4]`` detection boxes, pixels.
        weight: Cost of aspect ratios ``e`` (2.7) times apart or more.

    Returns:
        ``[N, M]`` costs in ``[0, weight]``: ``weight * min(|log(ratio)|, 1)``.
    """
    if weight <= 0 or not tracks:
        return np.zeros((len(tracks), len(boxes)))
    aspect = np.array([max(t.kalman.mean[2], 1e-3) for t in tracks])
    sizes = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-3)
    found = sizes[:, 0] / sizes[:, 1]
    return weight * np.minimum(np.abs(np.log(found[None, :] / aspect[:, None])), 1.0)


def color_distance(tracks: list[Track], colors: np.ndarray | None) -> np.ndarray | None:
    """Euclidean distances between the tracks' colours and the detections'.

    Args:
        tracks: The tracks (their smoothed colour).
        colors: ``[M, 3]`` detection colours, RGB in ``[0, 1]``, or None.

    Returns:
        ``[N, M]`` distances in ``[0, sqrt(3)]``, 0 for a track without a colour yet;
        None without detection colours.
    """
    if colors is None:
        return None
    distance = np.zeros((len(tracks), len(colors)))
    for row, track in enumerate(tracks):
        if track.color is not None:
            distance[row] = np.linalg.norm(colors - track.color, axis=1)
    return distance


def color_cost(tracks: list[Track], colors: np.ndarray, gate: float, weight: float) -> np.ndarray:
    """A detection's colour unlike a track's as a matching cost.

    Where two objects cross, IoU and motion leave the ids to chance for a frame or two; the
    colours tell the objects apart.

    Args:
        tracks: The tracks (their smoothed colour).
        colors: ``[M, 3]`` detection colours, RGB in ``[0, 1]``.
        gate: Colour distance at which the cost is full.
        weight: The full cost.

    Returns:
        ``[N, M]`` costs in ``[0, weight]``: ``weight * min(distance / gate, 1)``.
    """
    distance = color_distance(tracks, colors)
    return weight * np.minimum(distance / gate, 1.0)


@dataclass
class Track:
    """One tracked object.

    Attributes:
        kalman: Its motion state.
        class_id: Class of its latest detection.
        track_id: Its id, or :data:`NO_TRACK` until confirmed.
        last_seen: Tracker frame of its latest detection.
        observed: ``[4]`` its latest detection box, pixels (None until the first).
        sides: Larger sides of its latest detection boxes, pixels, newest last.
        color: ``[3]`` its smoothed colour, RGB in ``[0, 1]`` (None: no colour seen).
    """

    kalman: BoxKalman
    class_id: int
    track_id: int = NO_TRACK
    last_seen: int = 0
    observed: np.ndarray | None = None
    sides: list[float] = field(default_factory=list)
    color: np.ndarray | None = None

    def observe(self, box: np.ndarray, color: np.ndarray | None, settings: TrackerSettings) -> None:
        """Remember a detection's box (and its colour, smoothed) as the latest observation."""
        self.observed = box.copy()
        side = float(np.max(box[2:] - box[:2]))
        self.sides = [*self.sides[len(self.sides) + 1 - settings.size_memory :], side]
        if color is not None:
            seen = np.asarray(color, dtype=np.float64)
            keep = settings.color_momentum
            self.color = seen if self.color is None else keep * self.color + (1 - keep) * seen

    @property
    def full_side(self) -> float:
        """Largest side of its recent detection boxes (before an occluder clipped them)."""
        return max(self.sides, default=0.0)

    @property
    def confirmed(self) -> bool:
        """Whether the track has an id."""
        return self.track_id != NO_TRACK


@dataclass(frozen=True)
class _Frame:
    """One frame's detections as :meth:`ByteTracker.update` received them."""

    boxes: np.ndarray  # [N, 4] float64 x1, y1, x2, y2, pixels
    class_ids: np.ndarray  # [N] class indices
    colors: np.ndarray | None  # [N, 3] RGB in [0, 1], or None

    def colors_of(self, indices: np.ndarray) -> np.ndarray | None:
        """``[K, 3]`` colours of some detections, or None."""
        return None if self.colors is None else self.colors[indices]

    def color(self, index: int) -> np.ndarray | None:
        """``[3]`` colour of one detection, or None."""
        return None if self.colors is None else self.colors[index]


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
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        class_ids: np.ndarray,
        dt: int = 1,
        colors: np.ndarray | None = None,
    ) -> np.ndarray:
        """Advance by ``dt`` frames and associate one frame's detections.

        Args:
            boxes: ``[N, 4]`` ``x1, y1, x2, y2`` in frame pixels.
            scores: ``[N]`` confidences in ``[0, 1]``.
            class_ids: ``[N]`` class indices.
            dt: Frames since the previous update (>= 1; more when frames were skipped).
            colors: ``[N, 3]`` mean RGB in ``[0, 1]`` of each box's centre, or None
                (motion alone; a server without the ``colors`` output).

        Returns:
            ``[N]`` int64 track id of each detection, :data:`NO_TRACK` where none.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        frame = _Frame(
            boxes, class_ids, None if colors is None else np.asarray(colors).reshape(-1, 3)
        )
        first = self.frame == 0
        self.frame += max(int(dt), 1)
        for track in self.tracks:
            track.kalman.predict(max(int(dt), 1))
        ids = np.full(len(boxes), NO_TRACK, dtype=np.int64)
        strong = scores >= self.settings.high_score
        high = np.flatnonzero(strong)
        low = np.flatnonzero((scores >= self.settings.low_score) & ~strong)
        confirmed = [t for t in self.tracks if t.confirmed]
        left = self._associate(confirmed, high, frame, ids, self.settings.match_iou)
        recent = [t for t in left if t.last_seen == self.frame - max(int(dt), 1)]
        self._associate(recent, low, frame, ids, self.settings.low_match_iou)
        # Tracks lost for two frames or more (behind something) may take back a confident
        # detection near them that no track matched, before it starts a new track.
        lost = [t for t in left if t.last_seen < self.frame - max(int(dt), 1)]
        self._recover(lost, high[ids[high] == NO_TRACK], frame, ids)
        for track in self.tracks:
            if track.last_seen != self.frame:
                # Unseen, its box keeps its size: the shrinking of a box clipped by an
                # occluder on its way in says nothing about the object behind it.
                track.kalman.hold_size()
        fresh = [t for t in self.tracks if not t.confirmed]
        unused = high[ids[high] == NO_TRACK]
        unconfirmed_left = self._associate(
            fresh, unused, frame, ids, self.settings.confirm_iou, confirm=True
        )
        self.tracks = [t for t in self.tracks if t not in unconfirmed_left]
        self._start(frame, scores, ids, first)
        self.tracks = [t for t in self.tracks if self.frame - t.last_seen <= self.settings.max_age]
        return ids

    def _associate(
        self,
        tracks: list[Track],
        candidates: np.ndarray,
        frame: _Frame,
        ids: np.ndarray,
        min_iou: float,
        confirm: bool = False,
    ) -> list[Track]:
        """Match tracks to the candidate detections, update them; return the unmatched."""
        found, settings = frame.boxes[candidates], self.settings
        extra = direction_cost(tracks, found, settings.direction_weight)
        extra = extra + shape_cost(tracks, found, settings.shape_weight)
        colors = frame.colors_of(candidates)
        if colors is not None:
            extra = extra + color_cost(tracks, colors, settings.color_gate, settings.color_weight)
        pairs = match(np.array([t.kalman.box for t in tracks]), found, min_iou, extra)
        for t, d in pairs:
            track, index = tracks[t], int(candidates[d])
            track.kalman.update(frame.boxes[index])
            track.class_id, track.last_seen = int(frame.class_ids[index]), self.frame
            track.observe(frame.boxes[index], frame.color(index), settings)
            if confirm:
                track.track_id = next(self.ids)
            ids[index] = track.track_id
        matched = {t for t, _ in pairs}
        return [track for i, track in enumerate(tracks) if i not in matched]

    def _recover(
        self,
        lost: list[Track],
        candidates: np.ndarray,
        frame: _Frame,
        ids: np.ndarray,
    ) -> None:
        """Give unmatched tracks back the confident detections of their size near them.

        Pairs are matched one to one by centre distance over the track's size (the larger
        side of its largest recent box), up to :attr:`TrackerSettings.recover_distance`,
        and, with colours, only within :attr:`TrackerSettings.color_gate` of the track's
        colour. A recovered track's velocity is re-estimated from its last observation
        before the gap and this one (OC-SORT's observation-centric re-update), since the
        coasting estimate is what drifted.
        """
        limit, settings = self.settings.recover_distance, self.settings
        if not lost or len(candidates) == 0 or limit <= 0:
            return
        predicted = np.array([t.kalman.box for t in lost])
        found = frame.boxes[candidates]
        distance = np.linalg.norm(_centres(predicted)[:, None] - _centres(found)[None], axis=2)
        # The larger sides of the boxes seen before the occluder clipped them: the
        # predicted box keeps the clipped size, which would shrink the search and reject
        # the whole object coming out (with colours, pillar scenes of seeds 16000-16001: IDF1
        # 0.86 -> 0.94; MODEL_CARD.md, Tracking).
        sizes = np.max(predicted[:, 2:] - predicted[:, :2], axis=1)
        sizes = np.maximum(np.maximum(sizes, [t.full_side for t in lost]), 1.0)
        found_sizes = np.max(found[:, 2:] - found[:, :2], axis=1)
        cost = distance / sizes[:, None]
        ratio = found_sizes[None, :] / sizes[:, None]
        # Not much larger: not the occluder itself, should the detector take it for an
        # object (it lies right where lost tracks are predicted). The class is not compared:
        # a half-hidden object is often classified as another (measured at the pillar).
        plausible = (ratio >= settings.recover_size_ratio) & (ratio <= 2.0)
        apart = color_distance(lost, frame.colors_of(candidates))
        if apart is not None:
            plausible &= apart <= settings.color_gate
        cost = np.where(plausible, cost, limit + 1.0)
        _, rows, _ = lap.lapjv(cost, extend_cost=True, cost_limit=limit)
        for t, d in enumerate(rows):
            if d < 0:
                continue
            track, index = lost[t], int(candidates[d])
            gap = self.frame - track.last_seen
            track.kalman.reobserve(track.observed, frame.boxes[index], gap)
            track.observe(frame.boxes[index], frame.color(index), settings)
            track.last_seen = self.frame
            ids[index] = track.track_id

    def _start(self, frame: _Frame, scores: np.ndarray, ids: np.ndarray, first: bool) -> None:
        """New tracks from confident unmatched detections; confirmed at once in frame 1."""
        for index in np.flatnonzero((ids == NO_TRACK) & (scores >= self.settings.new_track_score)):
            track = Track(
                BoxKalman(frame.boxes[index]), int(frame.class_ids[index]), last_seen=self.frame
            )
            track.observe(frame.boxes[index], frame.color(int(index)), self.settings)
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
