"""MOTChallenge-style tracking ground truth: one row per object per frame, with identities.

Rows are ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,class,visibility`` as in the
MOTChallenge ``gt.txt`` files that ``motmetrics`` and ``TrackEval`` read: ``frame`` counts
from 1, ``id`` is the object's :attr:`~camdet.scenes.Frame.track_ids` entry + 1 (MOT ids
start at 1), the box is in frame pixels, ``class`` is the COCO category id
(:func:`~camdet.scenes.coco.class_id_to_category_id`). ``conf`` is 1 for a labelled object
(to be scored) and ``visibility`` the share of its in-frame area no occluder hides (``1``
in scenes without occluders). An object missing from a frame is hidden there (behind an
object in front, or out of frame), and comes back with the same id.

Scenes with occluders (:mod:`camdet.scenes.events`) follow the MOTChallenge convention for
what may not be scored (its distractor and occluder rows): an object drawn but too hidden
behind an occluder to be labelled (less than half of it shows; fully hidden included) gets
a row with ``conf`` 0 and its ``visibility`` below 1, and each occluder a row with id 0,
``conf`` 0 and class 0 in every frame. Evaluation ignores both: a hidden object is not a
miss, and a tracked box on it or on an occluder is not a false positive
(:func:`camdet.tracking.evaluate.accumulate`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from camdet.scenes.coco import class_id_to_category_id
from camdet.scenes.frame import Frame
from camdet.scenes.sequence import SceneSequence


@dataclass(frozen=True)
class TrackTruth:
    """Ground truth of one frame of a sequence, without its pixels.

    Attributes:
        ids: ``[N]`` int64 identities of the labelled (scored) objects (MOT ids: track id
            + 1).
        boxes: ``[N, 4]`` float32 ``x1, y1, x2, y2`` in frame pixels.
        class_ids: ``[N]`` int64 indices into :data:`~camdet.scenes.CLASSES`.
        visibility: ``[N]`` float32 share of each object's in-frame area no occluder hides,
            or None for all 1.
        hidden: Objects drawn behind occluders but too hidden to score (MOT ``conf`` 0), or
            None for none.
        occluders: ``[K, 4]`` float32 ``x1, y1, x2, y2`` of occluders (MOT id 0, ``conf``
            0, class 0): regions where nothing is scored; None for none.
    """

    ids: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    visibility: np.ndarray | None = None
    hidden: TrackTruth | None = None
    occluders: np.ndarray | None = None


def truth_of(frame: Frame) -> TrackTruth:
    """The tracking ground truth of a rendered frame (ids = track ids + 1)."""
    track_ids = frame.track_ids if frame.track_ids is not None else np.arange(len(frame.boxes))
    hidden = None
    if frame.hidden is not None and len(frame.hidden.track_ids):
        hidden = TrackTruth(
            frame.hidden.track_ids + 1,
            frame.hidden.boxes,
            frame.hidden.class_ids,
            frame.hidden.visibility,
        )
    return TrackTruth(
        np.asarray(track_ids, dtype=np.int64) + 1,
        frame.boxes,
        frame.class_ids.astype(np.int64),
        frame.visibility,
        hidden,
        frame.occluders,
    )


def sequence_truth(sequence: SceneSequence, num_frames: int) -> list[TrackTruth]:
    """Ground truth of a sequence's first frames without rendering them (~10x cheaper).

    Args:
        sequence: The scene.
        num_frames: Frames from index 0.

    Returns:
        One :class:`TrackTruth` per frame, equal to :func:`truth_of` the rendered frame.
    """
    return [truth_of(sequence.labels(index)) for index in range(num_frames)]


def _visibility_text(value: float) -> str:
    return "1" if value >= 1.0 else f"{value:.3f}"


def _rows(number: int, truth: TrackTruth, conf: int) -> list[str]:
    visibility = truth.visibility if truth.visibility is not None else np.ones(len(truth.ids))
    rows = []
    for track_id, box, class_id, seen in zip(
        truth.ids, truth.boxes, truth.class_ids, visibility, strict=True
    ):
        x1, y1, x2, y2 = (float(v) for v in box)
        category = class_id_to_category_id(int(class_id))
        rows.append(
            f"{number},{int(track_id)},{x1:.3f},{y1:.3f},{x2 - x1:.3f},{y2 - y1:.3f},"
            f"{conf},{category},{_visibility_text(float(seen))}"
        )
    return rows


def mot_lines(truths: Iterable[TrackTruth]) -> list[str]:
    """MOTChallenge rows of consecutive frames (frame 1 first): scored, hidden, occluders."""
    lines = []
    for number, truth in enumerate(truths, start=1):
        lines += _rows(number, truth, 1)
        if truth.hidden is not None:
            lines += _rows(number, truth.hidden, 0)
        for x1, y1, x2, y2 in truth.occluders if truth.occluders is not None else ():
            lines.append(f"{number},0,{x1:.3f},{y1:.3f},{x2 - x1:.3f},{y2 - y1:.3f},0,0,1")
    return lines


def write_mot(path: Path, truths: Iterable[TrackTruth]) -> Path:
    """Write MOTChallenge ground truth (see the module docstring).

    Args:
        path: The text file (parent folders are created).
        truths: Frames in order, frame 1 first.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in mot_lines(truths)))
    return path


def read_mot(path: Path, num_frames: int | None = None) -> list[TrackTruth]:
    """Read MOTChallenge ground truth back, one entry per frame from frame 1.

    Args:
        path: A file from :func:`write_mot` (or any MOT ``gt.txt`` with a class column).
        num_frames: Frames to return (default: up to the last frame with a row).

    Returns:
        Per frame: ids, ``x1, y1, x2, y2`` boxes and class indices (category id - 1) of the
        scored rows; visibility where any row of the frame is below 1; the ``conf`` 0 rows
        of objects as :attr:`TrackTruth.hidden` and those of occluders (id 0) as
        :attr:`TrackTruth.occluders`, where there are any.
    """
    rows = np.loadtxt(path, delimiter=",", ndmin=2) if path.stat().st_size else np.empty((0, 9))
    frames = int(rows[:, 0].max()) if len(rows) else 0
    truths = []
    for number in range(1, (num_frames or frames) + 1):
        mine = rows[rows[:, 0] == number]
        occluder = mine[:, 1] == 0
        scored, ignored = mine[mine[:, 6] != 0], mine[(mine[:, 6] == 0) & ~occluder]
        partial = bool(np.any(mine[:, 8] < 1))
        hidden = _truth_of_rows(ignored, True) if len(ignored) else None
        regions = _truth_of_rows(mine[occluder], False).boxes if occluder.any() else None
        truths.append(replace(_truth_of_rows(scored, partial), hidden=hidden, occluders=regions))
    return truths


def _truth_of_rows(rows: np.ndarray, visibility: bool) -> TrackTruth:
    """One frame's rows as a :class:`TrackTruth` (with the visibility column if asked)."""
    boxes = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1)
    return TrackTruth(
        rows[:, 1].astype(np.int64),
        boxes.astype(np.float32),
        rows[:, 7].astype(np.int64) - 1,
        rows[:, 8].astype(np.float32) if visibility else None,
    )
