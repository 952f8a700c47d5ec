"""Tracking scenes: occluders and crossings by construction, their exact ground truth, the
MOT rows that are not scored, and the event counts of ``camdet.tracking.evaluate`` (CPU
only, a few seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camdet import scenes
from camdet.scenes.events import OBJECT_TO_OCCLUDER
from camdet.scenes.mot import TrackTruth, mot_lines, read_mot, sequence_truth, write_mot
from camdet.tracking.bytetrack import TrackerSettings
from camdet.tracking.evaluate import (
    FrameDetections,
    accumulate,
    crossing_events,
    occlusion_events,
    score,
)

EVENTS = scenes.TrackingEvents()


def _sequence(seed: int, width: int = 640, height: int = 360) -> scenes.SceneSequence:
    return scenes.SceneSequence(seed, width, height, (6, 8), EVENTS)


def _truth(ids, boxes, hidden_ids=(), hidden_boxes=(), occluders=None) -> TrackTruth:
    hidden = None
    if len(hidden_ids):
        hidden = TrackTruth(
            np.array(hidden_ids, dtype=np.int64),
            np.array(hidden_boxes, dtype=np.float32).reshape(-1, 4),
            np.zeros(len(hidden_ids), dtype=np.int64),
            np.zeros(len(hidden_ids), dtype=np.float32),
        )
    regions = None if occluders is None else np.array(occluders, dtype=np.float32).reshape(-1, 4)
    return TrackTruth(
        np.array(ids, dtype=np.int64),
        np.array(boxes, dtype=np.float32).reshape(-1, 4),
        np.zeros(len(ids), dtype=np.int64),
        hidden=hidden,
        occluders=regions,
    )


def test_events_are_validated_and_plain_sequences_have_no_occluder_fields() -> None:
    for bad in ({"occluders": -1}, {"crossing_every": 1}, {"max_hidden_frames": 0}):
        with pytest.raises(ValueError, match="need occluders"):
            scenes.TrackingEvents(**bad)
    plain = scenes.SceneSequence(3, 320, 240)
    frame = plain.frame(5)
    assert plain.occluders is None
    assert frame.visibility is None and frame.hidden is None and frame.occluders is None
    again = scenes.SceneSequence(3, 320, 240, events=None).frame(5)
    np.testing.assert_array_equal(frame.image, again.image)
    np.testing.assert_array_equal(frame.boxes, again.boxes)
    for line in mot_lines(sequence_truth(plain, 3)):
        fields = line.split(",")
        assert fields[6] == "1" and fields[8] == "1" and int(fields[1]) >= 1


def _pixel_visibility(polygon: np.ndarray, bands: np.ndarray, width: int, height: int) -> float:
    raster = scenes.rasterize(polygon, width, height)
    assert raster is not None
    alpha = raster.alpha.astype(np.float64)
    columns = raster.x0 + np.arange(alpha.shape[1]) + 0.5
    behind = np.zeros(alpha.shape[1], dtype=bool)
    for left, right in bands:
        behind |= (columns > left) & (columns < right)
    return float(alpha[:, ~behind].sum() / alpha.sum())


def test_occluder_labels_follow_the_truncation_rule_exactly() -> None:
    sequence = _sequence(15_204)
    bands = sequence.occluders.bands
    width, height = sequence.width, sequence.height
    seen_partial = seen_hidden = 0
    for index in range(0, 120, 3):
        frame = sequence.labels(index)
        np.testing.assert_array_equal(frame.occluders, sequence.occluders.boxes)
        for polygon, box, visible in zip(
            frame.polygons, frame.boxes, frame.visibility, strict=True
        ):
            share = scenes.in_frame_fraction(polygon, width, height) * visible
            assert share >= scenes.MIN_IN_FRAME_FRACTION - 1e-6
            if visible < 0.99 and scenes.polygon_area(polygon) > 200:
                seen_partial += 1
                measured = _pixel_visibility(polygon, bands, width, height)
                assert abs(measured - visible) < 0.05, (index, measured, visible)
            # A pillar clips a box like the frame edge: no box edge lies behind a pillar.
            for left, right in bands:
                assert not left + 1e-3 < box[0] < right - 1e-3
                assert not left + 1e-3 < box[2] < right - 1e-3
            amodal = scenes.clip_boxes(scenes.polygon_box(polygon)[None], width, height)[0]
            assert np.all(box[:2] >= amodal[:2] - 1e-3) and np.all(box[2:] <= amodal[2:] + 1e-3)
        seen_hidden += len(frame.hidden.track_ids)
        for track_id, visible in zip(frame.hidden.track_ids, frame.hidden.visibility, strict=True):
            polygon = sequence.objects[track_id].polygon(index)
            assert scenes.in_frame_fraction(polygon, width, height) * visible < 0.5
        assert not set(frame.hidden.track_ids) & set(frame.track_ids)
    assert seen_partial and seen_hidden
    rendered = sequence.frame(60)
    np.testing.assert_array_equal(rendered.boxes, sequence.labels(60).boxes)
    np.testing.assert_array_equal(rendered.hidden.track_ids, sequence.labels(60).hidden.track_ids)


def test_pillars_hide_objects_whole_for_a_bounded_time() -> None:
    max_age = TrackerSettings().max_age
    for seed in (15_201, 15_300, 15_301):
        sequence = _sequence(seed)
        narrowest = sequence.occluders.narrowest
        for moving in sequence.objects:
            widest = 2 * moving.motion.low[0] / 0.4  # the bounce walls sit 0.4 reaches in
            assert widest <= OBJECT_TO_OCCLUDER * narrowest + 1e-6
        events = occlusion_events(sequence_truth(sequence, 450))
        assert events["occlusions_by_occluders"] >= 3, events
        assert events["longest_behind_occluder_frames"] <= EVENTS.max_hidden_frames + 2, events
        assert events["longest_behind_occluder_frames"] < max_age


def test_designed_pairs_meet_head_on_and_cross() -> None:
    sequence = _sequence(15_202, 1280, 720)
    for pair in range(len(sequence.objects) // 2):
        index = round(EVENTS.crossing_every * (pair + 0.5))
        a, b = (sequence.objects[2 * pair + k].motion for k in (0, 1))
        assert a.center(index)[0] == pytest.approx(b.center(index)[0], abs=1e-6)
        assert a.velocity[0] > 0 > b.velocity[0]
        for left, right in sequence.occluders.bands:
            assert not left <= a.center(index)[0] <= right
    truths = sequence_truth(sequence, EVENTS.crossing_every)
    assert crossing_events(truths) >= 1


def test_mot_rows_of_hidden_objects_and_occluders_round_trip(tmp_path: Path) -> None:
    truths = sequence_truth(_sequence(15_201), 60)
    lines = mot_lines(truths)
    rows = np.array([[float(v) for v in line.split(",")] for line in lines])
    occluder_rows = rows[rows[:, 1] == 0]
    assert len(occluder_rows) == 60 and np.all(occluder_rows[:, 6:9] == [0, 0, 1])
    hidden_rows = rows[(rows[:, 6] == 0) & (rows[:, 1] > 0)]
    assert len(hidden_rows) and np.all(hidden_rows[:, 8] < 0.5)
    back = read_mot(write_mot(tmp_path / "gt.txt", truths))
    for a, b in zip(truths, back, strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(b.occluders, a.occluders, atol=1e-3)
        if b.visibility is not None:
            np.testing.assert_allclose(a.visibility, b.visibility, atol=1e-3)
        assert (a.hidden is None or not len(a.hidden.ids)) == (b.hidden is None)
        if b.hidden is not None:
            np.testing.assert_array_equal(a.hidden.ids, b.hidden.ids)
            np.testing.assert_allclose(a.hidden.visibility, b.hidden.visibility, atol=1e-3)


def test_tracked_boxes_on_hidden_objects_and_occluders_are_not_scored() -> None:
    truth = _truth(
        [1], [[10, 10, 30, 30]], [2], [[100, 10, 110, 30]], occluders=[[200, 0, 260, 360]]
    )
    boxes = np.array(
        [[11, 10, 30, 31], [101, 11, 110, 29], [205, 0, 255, 200], [400, 10, 420, 30]],
        dtype=np.float32,
    )
    found = FrameDetections(boxes, np.full(4, 0.9, np.float32), np.zeros(4, np.int64))
    ids = np.array([7, 8, 9, 10])
    events = accumulate([truth], [found], [ids]).mot_events
    assert sorted(events.Type.tolist()) == ["FP", "MATCH"]
    assert events[events.Type == "FP"].HId.tolist() == [10]
    result = score([accumulate([truth], [found], [ids])], 0.0)
    assert result.object_frames == 1


def test_occlusion_and_crossing_definitions() -> None:
    a, far = [0, 0, 10, 10], [-200, 0, -190, 10]
    truths = [
        _truth([1, 2, 3], [a, [5, 0, 15, 10], [300, 0, 310, 10]]),
        _truth([], [], [1], [a]),  # 1 behind a pillar; 2 behind 1 (overlaps it); 3 away
        _truth([1, 2], [a, [6, 0, 16, 10]]),
        _truth([1, 3], [[2, 0, 12, 10], [4, 0, 14, 10]]),  # 3 back, alone when it left
        _truth([1, 3], [[3, 0, 13, 10], [1, 0, 11, 10]]),  # 1 and 3 swap x order
        _truth([1, 3], [[3, 0, 13, 10], [0, 0, 10, 10]]),
        _truth([1], [a]),  # 3 behind 1 for a frame
        _truth([1, 3], [[3, 0, 13, 10], [0, 0, 10, 10]]),
        _truth([1, 3], [far, [0, 0, 10, 10]]),  # swapped back, but no longer overlapping
    ]
    events = occlusion_events(truths)
    assert events == {
        "occlusions": 3,
        "occlusions_by_occluders": 1,
        "occlusions_by_objects": 2,
        "longest_behind_occluder_frames": 1,
        "longest_occlusion_frames": 1,
    }
    assert crossing_events(truths) == 1
