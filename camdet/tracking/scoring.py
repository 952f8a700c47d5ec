"""Tracking a clip's detections and scoring the ids against the ground truth (motmetrics).

A tracked box matches a ground-truth box at IoU >= :data:`MATCH_IOU`; boxes on objects
hidden behind occluders, or on the occluders, are not scored (MOT ``conf`` 0 rows,
:func:`accumulate`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import motmetrics as mm
import numpy as np

from camdet.contract import FrameDetections
from camdet.scenes.mot import TrackTruth
from camdet.tracking.bytetrack import NO_TRACK, ByteTracker, TrackerSettings, box_iou

MATCH_IOU = 0.5
"""Least IoU of a tracked box with a ground-truth box to count as the same object."""
IGNORE_COVER = 0.5
"""Least share of a tracked box inside an ignored (``conf`` 0) box for it to be ignored."""


@dataclass(frozen=True)
class TrackScores:
    """motmetrics' verdict over one or more clips.

    Attributes:
        idf1: Identity F1 (share of object-frames given the right identity), 0-1.
        mota: Multi-object tracking accuracy (1 - misses, false positives, switches).
        id_switches: Identity switches (a ground-truth object's matched id changes).
        object_frames: Ground-truth boxes over all frames.
        switches_per_1000: ``id_switches`` per 1,000 object-frames.
        frames: Frames scored.
        tracker_ms_per_frame: Mean CPU time of :meth:`ByteTracker.update`, milliseconds.
    """

    idf1: float
    mota: float
    id_switches: int
    object_frames: int
    switches_per_1000: float
    frames: int
    tracker_ms_per_frame: float


def _xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])


def track_clip(
    detections: Sequence[FrameDetections],
    settings: TrackerSettings | None = None,
    colors: bool = True,
) -> tuple[list[np.ndarray], float]:
    """Run one tracker over a clip's detections.

    ``colors`` False tracks by motion alone, as with a server without the ``colors`` output.

    Returns:
        ``[N]`` int64 track ids per frame (:data:`NO_TRACK` where none), and the tracker's
        CPU time, seconds.
    """
    tracker = ByteTracker(settings or TrackerSettings())
    ids, cpu = [], 0.0
    for found in detections:
        start = time.process_time()
        seen = found.colors if colors else None
        ids.append(tracker.update(found.boxes, found.scores, found.class_ids, colors=seen))
        cpu += time.process_time() - start
    return ids, cpu


def accumulate(
    truths: Sequence[TrackTruth],
    detections: Sequence[FrameDetections],
    ids: Sequence[np.ndarray],
) -> mm.MOTAccumulator:
    """The motmetrics events of one clip: tracked boxes against the ground truth, per frame.

    Objects too hidden behind occluders to be scored (:attr:`TrackTruth.hidden`) and the
    occluders themselves (:attr:`TrackTruth.occluders`) are ignored as MOTChallenge ignores
    its ``conf`` 0 rows: a tracked box that matches no scored box (IoU < :data:`MATCH_IOU`)
    but lies mostly (:data:`IGNORE_COVER`) inside a hidden object's or an occluder's box is
    dropped, neither a hit nor a false positive.
    """
    accumulator = mm.MOTAccumulator(auto_id=True)
    for truth, found, track_ids in zip(truths, detections, ids, strict=True):
        tracked = (track_ids != NO_TRACK) & ~_ignored(truth, found.boxes)
        distances = mm.distances.iou_matrix(
            _xywh(truth.boxes), _xywh(found.boxes[tracked]), max_iou=1.0 - MATCH_IOU
        )
        accumulator.update(truth.ids.tolist(), track_ids[tracked].tolist(), distances)
    return accumulator


def _ignored(truth: TrackTruth, boxes: np.ndarray) -> np.ndarray:
    """``[N]`` bool: boxes on objects that are not scored (see :func:`accumulate`)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    regions = [r.reshape(-1, 4) for r in (truth.occluders,) if r is not None]
    if truth.hidden is not None:
        regions.append(truth.hidden.boxes)
    hidden = np.concatenate(regions).astype(np.float64) if regions else np.empty((0, 4))
    if len(hidden) == 0 or len(boxes) == 0:
        return np.zeros(len(boxes), dtype=bool)
    top_left = np.maximum(boxes[:, None, :2], hidden[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], hidden[None, :, 2:])
    inside = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area = np.maximum(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1), 1e-9)
    covered = (inside / area[:, None]).max(axis=1) >= IGNORE_COVER
    matched = (box_iou(boxes, truth.boxes) >= MATCH_IOU).any(axis=1)
    return covered & ~matched


def score(accumulators: Sequence[mm.MOTAccumulator], tracker_cpu_s: float) -> TrackScores:
    """Combine clips into one :class:`TrackScores`."""
    metrics = mm.metrics.create()
    summary = metrics.compute_many(
        list(accumulators),
        metrics=["idf1", "mota", "num_switches", "num_objects", "num_frames"],
        names=[f"clip{i}" for i in range(len(accumulators))],
        generate_overall=True,
    ).loc["OVERALL"]
    switches, objects = int(summary["num_switches"]), int(summary["num_objects"])
    frames = int(summary["num_frames"])
    return TrackScores(
        idf1=round(float(summary["idf1"]), 4),
        mota=round(float(summary["mota"]), 4),
        id_switches=switches,
        object_frames=objects,
        switches_per_1000=round(1000.0 * switches / max(objects, 1), 3),
        frames=frames,
        tracker_ms_per_frame=round(1000.0 * tracker_cpu_s / max(frames, 1), 3),
    )


def per_clip_scores(accumulators: Sequence[mm.MOTAccumulator]) -> list[dict[str, float]]:
    """IDF1, identity switches and object-frames of each clip."""
    return [
        {
            "idf1": clip.idf1,
            "id_switches": clip.id_switches,
            "object_frames": clip.object_frames,
        }
        for clip in (score([accumulator], 0.0) for accumulator in accumulators)
    ]
