"""Tracking quality of the real detector plus ByteTrack on rendered clips, with motmetrics.

    python -m camdet.tracking.evaluate                      # 1920x1080, 30 fps, 3 x 20 s
    python -m camdet.tracking.evaluate --seconds 4 --width 640 --height 360 --clips 1
    python -m camdet.tracking.evaluate --plain              # no pillar, no designed crossings
    python -m camdet.tracking.evaluate --detections d.npz --set match_iou=0.05
    python -m camdet.tracking.evaluate --first-seed 17000   # held-out clips

Each clip is a :class:`~camdet.scenes.SceneSequence` with its own seed and 6 to 10 objects,
by default a tracking scene (:class:`~camdet.scenes.TrackingEvents`: a pillar the objects
pass behind, pairs that meet head-on), with ``--plain`` a plain one. Every frame is rendered
at full size, JPEG-compressed as a camera sends it, letterboxed, run through ``model.onnx``
with onnxruntime (as the portable server runs it) and decoded by
:func:`camdet.steps.postprocess.detections.postprocess` at the serving defaults
(confidence 0.25, IoU 0.7),
each box with its colour read from the letterboxed frame as the server reads it.
The detections go through one :class:`~camdet.tracking.bytetrack.ByteTracker` per clip, and
``motmetrics`` scores the ids against the ground truth (:mod:`camdet.scenes.mot`), a match
needing IoU >= 0.5: IDF1, MOTA, identity switches per 1,000 object-frames, and the
tracker's own CPU time per frame;
boxes on objects hidden behind the pillar, or on the pillar, are not scored (MOT ``conf`` 0
rows, :func:`accumulate`). The report also counts the clips' occlusions and crossings
(:func:`scene_events`). ``--detections`` keeps the detector's output, so that tracker
settings (``--set``) can be compared on the same boxes without running the detector again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import motmetrics as mm
import numpy as np
import torch

from camdet.geometry import letterbox_image
from camdet.scenes import SceneSequence, TrackingEvents, decode_jpeg, encode_jpeg
from camdet.scenes.mot import TrackTruth, sequence_truth, truth_of
from camdet.serving.repository import PRODUCTION_REPOSITORY
from camdet.steps.postprocess.detections import postprocess
from camdet.tracking.bytetrack import NO_TRACK, ByteTracker, TrackerSettings, box_iou

logger = logging.getLogger(__name__)

DEFAULT_ONNX = PRODUCTION_REPOSITORY / "detector" / "1" / "model.onnx"
MATCH_IOU = 0.5
"""Least IoU of a tracked box with a ground-truth box to count as the same object."""
CLIP_SEED_BASE = 15_000  # clip i uses seed CLIP_SEED_BASE + i: disjoint from tests' seeds
HELD_OUT_SEEDS = (17_000, 18_000)
"""First seeds of the held-out clips (``--first-seed``): no tracker setting was chosen on them
(16000-16001 were used to find the size memory; MODEL_CARD.md, Tracking)."""
DEFAULT_EVENTS = TrackingEvents()
"""Occluders and crossings of the evaluation clips (one pillar, a crossing every 2 s)."""
IGNORE_COVER = 0.5
"""Least share of a tracked box inside an ignored (``conf`` 0) box for it to be ignored."""


@dataclass(frozen=True)
class FrameDetections:
    """Detections of one frame.

    Attributes:
        boxes: ``[N, 4]`` float32 ``x1, y1, x2, y2`` in frame pixels.
        scores: ``[N]`` float32 confidences.
        class_ids: ``[N]`` int64 class indices.
        colors: ``[N, 3]`` float32 mean RGB of each box's centre
            (:func:`camdet.steps.postprocess.detections.box_colors`), or None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    colors: np.ndarray | None = None


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
        letterboxed = torch.from_numpy(letterbox_image(image).transpose(2, 0, 1).copy())[None]
        raw = predict(letterboxed)
        sizes = torch.tensor([image.shape[:2]])
        found = postprocess(raw, sizes, images=letterboxed.to(torch.float16) / 255)[0]
        return FrameDetections(
            found.boxes.numpy(),
            found.scores.numpy(),
            found.class_ids.numpy().astype(np.int64),
            found.colors.numpy(),
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


def _add_events(total: dict[str, int], clip: dict[str, int]) -> None:
    for key, value in clip.items():
        merge = max if key.startswith("longest") else int.__add__
        total[key] = merge(total.get(key, 0), value)


def evaluate(
    clips: int,
    seconds: float,
    width: int,
    height: int,
    fps: int,
    onnx: Path,
    events: TrackingEvents | None = DEFAULT_EVENTS,
    settings: TrackerSettings | None = None,
    detections_path: Path | None = None,
    first_seed: int = CLIP_SEED_BASE,
    colors: bool = True,
) -> dict[str, object]:
    """Detect, track and score ``clips`` clips; the report as a dict.

    Args:
        clips: Clips (seeds ``first_seed``, ``first_seed + 1``, ...).
        seconds: Length of each clip.
        width: Frame width, pixels.
        height: Frame height, pixels.
        fps: Frames per second.
        onnx: The detector.
        events: Occluders and crossings built into the scenes, or None for plain ones.
        settings: Tracker thresholds (default: ByteTrack's published ones).
        detections_path: An ``.npz`` of the detections: read if it exists (the detector
            is not run), else written, so that tracker settings can be compared on the
            same detections.
        first_seed: Seed of the first clip (:data:`CLIP_SEED_BASE`: the clips the
            tracker's settings were chosen on; :data:`HELD_OUT_SEEDS`: clips they were not).
        colors: False: track by motion alone (the boxes' colours unused).

    Raises:
        ValueError: If ``detections_path`` holds detections of other clips.
    """
    settings = settings or TrackerSettings()
    num_frames = round(seconds * fps)
    sequences = [
        SceneSequence(first_seed + clip, width, height, (6, 10), events) for clip in range(clips)
    ]
    start = time.perf_counter()
    cached = detections_path is not None and detections_path.exists()
    if cached:
        all_detections = load_detections(detections_path)
        if [len(frames) for frames in all_detections] != [num_frames] * clips:
            raise ValueError(f"{detections_path} holds other clips than {clips} x {num_frames}")
        saved_seed = detections_seed(detections_path)
        if saved_seed is not None and saved_seed != first_seed:
            raise ValueError(
                f"{detections_path} holds the clips of seed {saved_seed}, not {first_seed}"
            )
        all_truths = [sequence_truth(sequence, num_frames) for sequence in sequences]
    else:
        detect = onnx_detector(onnx)
        all_truths, all_detections = [], []
        for clip, sequence in enumerate(sequences):
            truths, detections = detect_clip(sequence, num_frames, detect)
            all_truths.append(truths)
            all_detections.append(detections)
            logger.info(
                "clip %d of %d detected (%.0f s)", clip + 1, clips, time.perf_counter() - start
            )
        if detections_path is not None:
            save_detections(detections_path, all_detections, first_seed)
    accumulators, cpu, totals = [], 0.0, {}
    for truths, detections in zip(all_truths, all_detections, strict=True):
        ids, clip_cpu = track_clip(detections, settings, colors)
        accumulators.append(accumulate(truths, detections, ids))
        cpu += clip_cpu
        _add_events(totals, scene_events(truths))
    return {
        "clips": clips,
        "size": f"{width}x{height}",
        "fps": fps,
        "seconds_per_clip": seconds,
        "first_seed": first_seed,
        "events": asdict(events) if events is not None else None,
        "scene_events": totals,
        "scores": asdict(score(accumulators, cpu)),
        "per_clip": per_clip_scores(accumulators),
        "settings": asdict(settings),
        "colors": colors,
        "detections_read_from": str(detections_path) if cached else None,
        "wall_s": round(time.perf_counter() - start, 1),
    }


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


_SAVED = ("boxes", "scores", "class_ids", "colors")
"""Fields of :class:`FrameDetections` in a detections file (``colors`` may be missing)."""


def save_detections(
    path: Path, clips: Sequence[Sequence[FrameDetections]], first_seed: int | None = None
) -> None:
    """Write every clip's detections to one ``.npz`` (see :func:`load_detections`).

    ``first_seed`` (the seed of the first clip) is kept with them if given, so that
    :func:`evaluate` refuses to score them against other clips (:func:`detections_seed`).
    """
    arrays: dict[str, np.ndarray] = {}
    if first_seed is not None:
        arrays["first_seed"] = np.array(first_seed, dtype=np.int64)
    for clip, frames in enumerate(clips):
        arrays[f"clip{clip}_counts"] = np.array([len(f.boxes) for f in frames], dtype=np.int64)
        for field in _SAVED:
            parts = [getattr(f, field) for f in frames]
            if any(part is None for part in parts):
                continue
            arrays[f"clip{clip}_{field}"] = np.concatenate(parts) if parts else np.empty(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def detections_seed(path: Path) -> int | None:
    """Seed of the first clip of a detections file (None: written without it)."""
    data = np.load(path)
    return int(data["first_seed"]) if "first_seed" in data.files else None


def load_detections(path: Path) -> list[list[FrameDetections]]:
    """Read detections written by :func:`save_detections`, per clip and frame."""
    data = np.load(path)
    clips = []
    for clip in range(sum(1 for key in data.files if key.endswith("_counts"))):
        ends = np.cumsum(data[f"clip{clip}_counts"])
        split = {
            field: np.split(data[f"clip{clip}_{field}"], ends[:-1])
            for field in _SAVED
            if f"clip{clip}_{field}" in data.files
        }
        colors = split.get("colors", [None] * len(ends))
        clips.append(
            [
                FrameDetections(b.reshape(-1, 4), s, c, None if k is None else k.reshape(-1, 3))
                for b, s, c, k in zip(
                    split["boxes"], split["scores"], split["class_ids"], colors, strict=True
                )
            ]
        )
    return clips


def _settings(pairs: Sequence[str]) -> TrackerSettings:
    """TrackerSettings from ``name=value`` strings (the rest at their defaults)."""
    kinds = {field.name: field.type for field in fields(TrackerSettings)}
    values: dict[str, float | int] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in kinds:
            raise SystemExit(f"unknown tracker setting {name!r}; known: {', '.join(kinds)}")
        values[name] = int(value) if kinds[name] in (int, "int") else float(value)
    return TrackerSettings(**values)


def main(argv: list[str] | None = None) -> None:
    """Command line: print the report as JSON (and write it with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=3, help="clips (seeds) to evaluate")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=CLIP_SEED_BASE,
        help=f"seed of the first clip (held-out clips: {', '.join(map(str, HELD_OUT_SEEDS))})",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each clip")
    parser.add_argument("--width", type=int, default=1920, help="frame width, pixels")
    parser.add_argument("--height", type=int, default=1080, help="frame height, pixels")
    parser.add_argument("--fps", type=int, default=30, help="frames per second")
    parser.add_argument("--onnx", type=Path, default=DEFAULT_ONNX, help="detector ONNX file")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument(
        "--occluders", type=int, default=DEFAULT_EVENTS.occluders, help="pillars per scene"
    )
    parser.add_argument(
        "--crossing-every",
        type=int,
        default=DEFAULT_EVENTS.crossing_every,
        help="frames between designed crossings",
    )
    parser.add_argument(
        "--plain", action="store_true", help="plain scenes: no occluders, no designed crossings"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a TrackerSettings field, e.g. --set match_iou=0.1 (repeatable)",
    )
    parser.add_argument(
        "--no-colors",
        action="store_true",
        help="track by motion alone, as with a server without the colors output",
    )
    parser.add_argument(
        "--detections",
        type=Path,
        help="detections .npz: read if it exists (no detector run), else written",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    events = None
    if not args.plain:
        events = replace(
            DEFAULT_EVENTS, occluders=args.occluders, crossing_every=args.crossing_every
        )
    report = evaluate(
        args.clips,
        args.seconds,
        args.width,
        args.height,
        args.fps,
        args.onnx,
        events,
        _settings(args.set),
        args.detections,
        args.first_seed,
        not args.no_colors,
    )
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
