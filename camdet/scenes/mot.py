"""MOTChallenge-style tracking ground truth: one row per object per frame, with identities.

Rows are ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,class,visibility`` as in the
MOTChallenge ``gt.txt`` files that ``motmetrics`` and ``TrackEval`` read: ``frame`` counts
from 1, ``id`` is the object's :attr:`~camdet.scenes.Frame.track_ids` entry + 1 (MOT ids
start at 1), the box is in frame pixels, ``conf`` is 1 (to be scored), ``class`` is the
COCO category id (:func:`~camdet.scenes.coco.class_id_to_category_id`) and ``visibility``
is 1. An object missing from a frame is hidden there (occluded or out of frame), and comes
back with the same id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camdet.scenes.coco import class_id_to_category_id
from camdet.scenes.frame import Frame
from camdet.scenes.sequence import SceneSequence
from camdet.scenes.shapes import clip_boxes, polygon_box


@dataclass(frozen=True)
class TrackTruth:
    """Ground truth of one frame of a sequence, without its pixels.

    Attributes:
        ids: ``[N]`` int64 object identities (MOT ids: track id + 1).
        boxes: ``[N, 4]`` float32 ``x1, y1, x2, y2`` in frame pixels.
        class_ids: ``[N]`` int64 indices into :data:`~camdet.scenes.CLASSES`.
    """

    ids: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray


def truth_of(frame: Frame) -> TrackTruth:
    """The tracking ground truth of a rendered frame (ids = track ids + 1)."""
    track_ids = frame.track_ids if frame.track_ids is not None else np.arange(len(frame.boxes))
    return TrackTruth(
        np.asarray(track_ids, dtype=np.int64) + 1, frame.boxes, frame.class_ids.astype(np.int64)
    )


def sequence_truth(sequence: SceneSequence, num_frames: int) -> list[TrackTruth]:
    """Ground truth of a sequence's first frames without rendering them (~10x cheaper).

    Args:
        sequence: The scene.
        num_frames: Frames from index 0.

    Returns:
        One :class:`TrackTruth` per frame, equal to :func:`truth_of` the rendered frame.
    """
    truths = []
    for index in range(num_frames):
        objects = sequence.visible_objects(index)
        boxes = np.array([polygon_box(o.polygon) for o in objects]).reshape(-1, 4)
        truths.append(
            TrackTruth(
                np.array([o.track_id + 1 for o in objects], dtype=np.int64),
                clip_boxes(boxes, sequence.width, sequence.height),
                np.array([o.class_id for o in objects], dtype=np.int64),
            )
        )
    return truths


def mot_lines(truths: Iterable[TrackTruth]) -> list[str]:
    """MOTChallenge rows of consecutive frames (frame 1 first)."""
    lines = []
    for number, truth in enumerate(truths, start=1):
        for track_id, box, class_id in zip(truth.ids, truth.boxes, truth.class_ids, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            category = class_id_to_category_id(int(class_id))
            lines.append(
                f"{number},{int(track_id)},{x1:.3f},{y1:.3f},{x2 - x1:.3f},{y2 - y1:.3f},"
                f"1,{category},1"
            )
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
        Per frame: ids, ``x1, y1, x2, y2`` boxes and class indices (category id - 1).
    """
    rows = np.loadtxt(path, delimiter=",", ndmin=2) if path.stat().st_size else np.empty((0, 9))
    frames = int(rows[:, 0].max()) if len(rows) else 0
    truths = []
    for number in range(1, (num_frames or frames) + 1):
        mine = rows[rows[:, 0] == number]
        boxes = np.concatenate([mine[:, 2:4], mine[:, 2:4] + mine[:, 4:6]], axis=1)
        truths.append(
            TrackTruth(
                mine[:, 1].astype(np.int64),
                boxes.astype(np.float32),
                mine[:, 7].astype(np.int64) - 1,
            )
        )
    return truths
