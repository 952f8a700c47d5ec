"""Tracking quality of the real detector plus ByteTrack on rendered clips, with motmetrics.

    python -m camdet.tracking.evaluate                      # 1920x1080, 30 fps, 3 clips
    python -m camdet.tracking.evaluate --seconds 4 --width 640 --height 360 --clips 1

Each clip is a :class:`~camdet.scenes.SceneSequence` (its own seed, 6 to 10 objects that
cross and hide each other). Every frame is rendered at full size, JPEG-compressed as a
camera sends it, letterboxed, run through ``model.onnx`` with onnxruntime (as the portable
server runs it) and decoded by :func:`camdet.postprocess.postprocess` at the serving
defaults (confidence 0.25, IoU 0.7). The detections go through one
:class:`~camdet.tracking.bytetrack.ByteTracker` per clip, and ``motmetrics`` scores the ids
against the ground truth (:mod:`camdet.scenes.mot`), a match needing IoU >= 0.5: IDF1,
MOTA, identity switches per 1,000 object-frames, and the tracker's own CPU time per frame.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import motmetrics as mm
import numpy as np
import torch

from camdet.geometry import letterbox_image
from camdet.postprocess import postprocess
from camdet.repository import PRODUCTION_REPOSITORY
from camdet.scenes import SceneSequence, decode_jpeg, encode_jpeg
from camdet.scenes.mot import TrackTruth, truth_of
from camdet.tracking.bytetrack import NO_TRACK, ByteTracker, TrackerSettings, box_iou

logger = logging.getLogger(__name__)

DEFAULT_ONNX = PRODUCTION_REPOSITORY / "detector" / "1" / "model.onnx"
MATCH_IOU = 0.5
"""Least IoU of a tracked box with a ground-truth box to count as the same object."""
CLIP_SEED_BASE = 15_000  # clip i uses seed CLIP_SEED_BASE + i: disjoint from tests' seeds


@dataclass(frozen=True)
class FrameDetections:
    """Detections of one frame.

    Attributes:
        boxes: ``[N, 4]`` float32 ``x1, y1, x2, y2`` in frame pixels.
        scores: ``[N]`` float32 confidences.
        class_ids: ``[N]`` int64 class indices.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray


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


def onnx_detector(path: Path = DEFAULT_ONNX) -> Callable[[np.ndarray], FrameDetections]:
    """The serving math on the CPU: letterbox, onnxruntime, :func:`postprocess`.

    Args:
        path: The detector's ONNX file.

    Returns:
        A function from an ``[H, W, 3]`` uint8 RGB frame to its detections.
    """
    from camdet.detector.evaluate import onnx_predictor

    predict = onnx_predictor(path)

    def detect(image: np.ndarray) -> FrameDetections:
        letterboxed = torch.from_numpy(letterbox_image(image).transpose(2, 0, 1).copy())
        raw = predict(letterboxed[None])
        found = postprocess(raw, torch.tensor([image.shape[:2]]))[0]
        return FrameDetections(
            found.boxes.numpy(), found.scores.numpy(), found.class_ids.numpy().astype(np.int64)
        )

    return detect


def detect_clip(
    sequence: SceneSequence,
    num_frames: int,
    detect: Callable[[np.ndarray], FrameDetections],
    jpeg_quality: int = 90,
) -> tuple[list[TrackTruth], list[FrameDetections]]:
    """Render a clip, pass every frame through JPEG and the detector.

    Returns:
        Ground truth and detections per frame.
    """
    truths, detections = [], []
    for index in range(num_frames):
        frame = sequence.frame(index)
        truths.append(truth_of(frame))
        detections.append(detect(decode_jpeg(encode_jpeg(frame.image, jpeg_quality))))
    return truths, detections


def track_clip(
    detections: Sequence[FrameDetections], settings: TrackerSettings | None = None
) -> tuple[list[np.ndarray], float]:
    """Run one tracker over a clip's detections.

    Returns:
        ``[N]`` int64 track ids per frame (:data:`NO_TRACK` where none), and the tracker's
        CPU time, seconds.
    """
    tracker = ByteTracker(settings or TrackerSettings())
    ids, cpu = [], 0.0
    for found in detections:
        start = time.process_time()
        ids.append(tracker.update(found.boxes, found.scores, found.class_ids))
        cpu += time.process_time() - start
    return ids, cpu


def accumulate(
    truths: Sequence[TrackTruth],
    detections: Sequence[FrameDetections],
    ids: Sequence[np.ndarray],
) -> mm.MOTAccumulator:
    """The motmetrics events of one clip: tracked boxes against the ground truth, per frame."""
    accumulator = mm.MOTAccumulator(auto_id=True)
    for truth, found, track_ids in zip(truths, detections, ids, strict=True):
        tracked = track_ids != NO_TRACK
        distances = mm.distances.iou_matrix(
            _xywh(truth.boxes), _xywh(found.boxes[tracked]), max_iou=1.0 - MATCH_IOU
        )
        accumulator.update(truth.ids.tolist(), track_ids[tracked].tolist(), distances)
    return accumulator


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


def scene_events(truths: Sequence[TrackTruth]) -> dict[str, int]:
    """How hard a clip is: occlusion gaps and crossings in its ground truth.

    Returns:
        ``occlusions``: times an object disappeared and came back later;
        ``crossings``: pairs of objects whose boxes overlapped in some frame.
    """
    last_seen: dict[int, int] = {}
    occlusions = 0
    pairs: set[tuple[int, int]] = set()
    for index, truth in enumerate(truths):
        for track_id in truth.ids.tolist():
            if track_id in last_seen and last_seen[track_id] < index - 1:
                occlusions += 1
            last_seen[track_id] = index
        overlap = box_iou(truth.boxes, truth.boxes) > 0
        for a, b in zip(*np.nonzero(np.triu(overlap, 1)), strict=True):
            pairs.add((int(truth.ids[a]), int(truth.ids[b])))
    return {"occlusions": occlusions, "crossings": len(pairs)}


def evaluate(
    clips: int, seconds: float, width: int, height: int, fps: int, onnx: Path
) -> dict[str, object]:
    """Detect, track and score ``clips`` clips; the report as a dict."""
    detect = onnx_detector(onnx)
    num_frames = round(seconds * fps)
    accumulators, cpu, events = [], 0.0, {"occlusions": 0, "crossings": 0}
    start = time.perf_counter()
    for clip in range(clips):
        sequence = SceneSequence(CLIP_SEED_BASE + clip, width, height, (6, 10))
        truths, detections = detect_clip(sequence, num_frames, detect)
        ids, clip_cpu = track_clip(detections)
        accumulators.append(accumulate(truths, detections, ids))
        cpu += clip_cpu
        for key, value in scene_events(truths).items():
            events[key] += value
        logger.info("clip %d of %d done (%.0f s)", clip + 1, clips, time.perf_counter() - start)
    scores = score(accumulators, cpu)
    return {
        "clips": clips,
        "size": f"{width}x{height}",
        "fps": fps,
        "seconds_per_clip": seconds,
        "scene_events": events,
        "scores": asdict(scores),
        "settings": asdict(TrackerSettings()),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: print the report as JSON (and write it with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=3, help="clips (seeds) to evaluate")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each clip")
    parser.add_argument("--width", type=int, default=1920, help="frame width, pixels")
    parser.add_argument("--height", type=int, default=1080, help="frame height, pixels")
    parser.add_argument("--fps", type=int, default=30, help="frames per second")
    parser.add_argument("--onnx", type=Path, default=DEFAULT_ONNX, help="detector ONNX file")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = evaluate(args.clips, args.seconds, args.width, args.height, args.fps, args.onnx)
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
