"""How hard a clip is for a tracker: the occlusions and crossings in its ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from camdet.scenes.mot import TrackTruth
from camdet.tracking.bytetrack import box_iou


def _overlaps_another(truth: TrackTruth, row: int) -> bool:
    """Whether a scored box intersects any other scored box of its frame."""
    overlap = box_iou(truth.boxes[row : row + 1], truth.boxes)[0] > 0
    overlap[row] = False
    return bool(overlap.any())


def _hidden_ids(truth: TrackTruth) -> set[int]:
    return set(truth.hidden.ids.tolist()) if truth.hidden is not None else set()


def occlusion_events(truths: Sequence[TrackTruth]) -> dict[str, int]:
    """Occlusions in a clip's ground truth.

    An *occlusion* is a gap: an object scored in frame ``f1``, not scored in frames
    ``f1 + 1 .. f2 - 1`` (at least one), scored again in ``f2``. It is one *by an
    occluder* if a pillar hides it in at least one frame of the gap (it has a ``conf`` 0
    row there, :attr:`TrackTruth.hidden`), else one *by an object* if its box overlaps
    another object's box in both ``f1`` and ``f2`` (it went behind an object in front and
    came out). Other gaps (the object left the frame, or was truncated too much at its
    edge) are not occlusions.

    Returns:
        ``occlusions`` (both kinds), ``occlusions_by_occluders``, ``occlusions_by_objects``,
        ``longest_behind_occluder_frames`` (most frames of one gap in which a pillar hides
        the object: what :class:`~camdet.scenes.TrackingEvents` bounds) and
        ``longest_occlusion_frames`` (the longest gap of either kind, which may join a
        pillar and an object in front, frames).
    """
    last: dict[int, int] = {}
    by_occluders = by_objects = longest_behind = longest = 0
    for index, truth in enumerate(truths):
        for row, track_id in enumerate(truth.ids.tolist()):
            previous = last.get(track_id)
            last[track_id] = index
            if previous is None or previous == index - 1:
                continue
            gap = range(previous + 1, index)
            behind = sum(track_id in _hidden_ids(truths[f]) for f in gap)
            if behind:
                by_occluders += 1
                longest_behind = max(longest_behind, behind)
            elif _overlaps_another(truths[previous], _row_of(truths[previous], track_id)) and (
                _overlaps_another(truth, row)
            ):
                by_objects += 1
            else:
                continue
            longest = max(longest, len(gap))
    return {
        "occlusions": by_occluders + by_objects,
        "occlusions_by_occluders": by_occluders,
        "occlusions_by_objects": by_objects,
        "longest_behind_occluder_frames": longest_behind,
        "longest_occlusion_frames": longest,
    }


def _row_of(truth: TrackTruth, track_id: int) -> int:
    return int(np.flatnonzero(truth.ids == track_id)[0])


def crossing_events(truths: Sequence[TrackTruth]) -> int:
    """Crossings in a clip's ground truth.

    A *crossing* is two objects swapping order while they overlap: between two frames in
    which both are scored (consecutive, or with frames between in which one of them is
    hidden), the order of their box centres flips along x or along y (or both: one
    crossing), and their boxes overlap in both frames.

    Returns:
        The number of crossings.
    """
    last: dict[tuple[int, int], tuple[np.ndarray, bool]] = {}
    crossings = 0
    for truth in truths:
        centers = (truth.boxes[:, :2] + truth.boxes[:, 2:]) / 2
        overlap = box_iou(truth.boxes, truth.boxes) > 0
        ids = truth.ids.tolist()
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                key = (ids[a], ids[b]) if ids[a] < ids[b] else (ids[b], ids[a])
                order = np.sign(centers[a] - centers[b]) * (1 if ids[a] < ids[b] else -1)
                before = last.get(key)
                if before is not None and before[1] and overlap[a, b]:
                    crossings += int(np.any(order * before[0] < 0))
                last[key] = (order, bool(overlap[a, b]))
    return crossings


def scene_events(truths: Sequence[TrackTruth]) -> dict[str, int]:
    """How hard a clip is, from its ground truth.

    Returns:
        The counts of :func:`occlusion_events` plus ``crossings`` (:func:`crossing_events`).
    """
    return {**occlusion_events(truths), "crossings": crossing_events(truths)}


def add_events(total: dict[str, int], clip: dict[str, int]) -> None:
    """Add a clip's :func:`scene_events` to ``total`` (the longest gaps: their maximum)."""
    for key, value in clip.items():
        merge = max if key.startswith("longest") else int.__add__
        total[key] = merge(total.get(key, 0), value)
