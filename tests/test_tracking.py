"""Tracking without a server: ByteTrack on exact scene truth, count lines, MOT files, and
the client's per-camera stage (sessions, gaps, late answers), metrics and sinks."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from camdet.client.accounting import Accounting
from camdet.client.metrics import IngestCollector
from camdet.client.reader import CapturedFrame
from camdet.client.report import totals_table
from camdet.client.sinks import Result, annotate
from camdet.client.tracks import Tracking

from camdet.contract import Detection
from camdet.scenes import SceneSequence, mot_path, write_clip
from camdet.scenes.mot import read_mot, sequence_truth, truth_of, write_mot
from camdet.tracking.bytetrack import (
    NO_TRACK,
    ByteTracker,
    Track,
    TrackerSettings,
    box_iou,
    color_cost,
    match,
    shape_cost,
)
from camdet.tracking.evaluate import FrameDetections, accumulate, scene_events, score
from camdet.tracking.kalman import BoxKalman
from camdet.tracking.lines import CountLine, LineCounter


def noisy_detections(truths, seed: int, jitter_px: float = 1.0, miss: float = 0.05):
    """Ground truth as a detector would see it: jittered boxes, a few missed."""
    rng = np.random.default_rng(seed)
    out = []
    for truth in truths:
        keep = rng.random(len(truth.ids)) >= miss
        boxes = truth.boxes[keep] + rng.normal(0, jitter_px, (int(keep.sum()), 4))
        scores = rng.uniform(0.6, 0.95, int(keep.sum()))
        out.append(FrameDetections(boxes.astype(np.float32), scores, truth.class_ids[keep]))
    return out


def test_iou_and_matching() -> None:
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    b = np.array([[20, 20, 30, 30], [0, 0, 10, 5], [100, 100, 110, 110]])
    np.testing.assert_allclose(box_iou(a, b), [[0, 0.5, 0], [1, 0, 0]])
    assert sorted(match(a, b, 0.3)) == [(0, 1), (1, 0)]
    assert match(a, b, 0.6) == [(1, 0)]
    assert match(a[:0], b, 0.1) == []


def test_tracker_follows_scene_objects_through_occlusions_and_crossings() -> None:
    sequence = SceneSequence(15_100, 640, 360, num_objects=(8, 10))
    truths = sequence_truth(sequence, 300)
    events = scene_events(truths)
    assert events["crossings"] >= 1 and events["occlusions"] >= 1, events
    detections = noisy_detections(truths, seed=1)
    tracker = ByteTracker()
    ids = [tracker.update(d.boxes, d.scores, d.class_ids) for d in detections]
    result = score([accumulate(truths, detections, ids)], 0.0)
    assert result.idf1 >= 0.9, result
    assert result.switches_per_1000 <= 1.0, result


def test_first_frame_confirms_later_objects_need_two_frames() -> None:
    tracker = ByteTracker()
    box = np.array([[10.0, 10.0, 50.0, 50.0]])
    assert tracker.update(box, [0.9], [0]).tolist() == [1]
    other = np.array([[10.0, 10.0, 50.0, 50.0], [200.0, 200.0, 240.0, 240.0]])
    assert tracker.update(other, [0.9, 0.9], [0, 1]).tolist() == [1, NO_TRACK]
    assert tracker.update(other + 2, [0.9, 0.9], [0, 1]).tolist() == [1, 2]
    # A weak detection only extends an existing track; it never starts one.
    assert tracker.update(other[:1] + 4, [0.3], [0]).tolist() == [1]
    assert tracker.update(other[1:] + 500, [0.3], [1]).tolist() == [NO_TRACK]


def test_track_coasts_through_a_gap_and_ends_after_max_age() -> None:
    tracker = ByteTracker()
    velocity = np.array([3.0, 1.0, 3.0, 1.0])
    box = np.array([100.0, 100.0, 140.0, 160.0])
    for frame in range(5):
        assert tracker.update((box + frame * velocity)[None], [0.9], [2]).tolist() == [1]
    # 20 frames unseen (a server outage): the motion model carries the track across.
    assert tracker.update((box + 25 * velocity)[None], [0.9], [2], dt=21).tolist() == [1]
    tracker.update(np.empty((0, 4)), [], [], dt=tracker.settings.max_age + 1)
    assert tracker.update((box + 60 * velocity)[None], [0.9], [2]).tolist() == [NO_TRACK]


def test_count_line_counts_each_direction_once_despite_jitter() -> None:
    line = CountLine.parse("100,0,100,200")
    counter = LineCounter(line)
    # Going from (100, 0) to (100, 200) in image coordinates, the right-hand side ("in")
    # is x < 100: moving right crosses "out", moving back left crosses "in". Both times
    # the box jitters on the line (within the margin, and just beyond it).
    there = [80, 95, 99, 101, 99.5, 100.5, 105, 130]
    back = [130, 103, 101, 99, 100.5, 99.5, 97, 60]
    events = [counter.update(np.array([7]), np.array([[x - 5, 50, x + 5, 60]])) for x in there]
    assert [e for e in events if e] == [[(7, "out")]]
    events = [counter.update(np.array([7]), np.array([[x - 5, 50, x + 5, 60]])) for x in back]
    assert [e for e in events if e] == [[(7, "in")]]
    assert dict(counter.counts) == {"out": 1, "in": 1}
    # Crossing the infinite line beyond the segment's end does not count.
    counter.update(np.array([8]), np.array([[80, 300, 90, 310]]))
    counter.update(np.array([8]), np.array([[120, 300, 130, 310]]))
    assert sum(counter.counts.values()) == 2
    for bad in ("1,2,3", "a,b,c,d", "5,5,5,5"):
        with pytest.raises(ValueError):
            CountLine.parse(bad)


def test_mot_ground_truth_round_trips_and_matches_rendered_frames(tmp_path: Path) -> None:
    sequence = SceneSequence(15_101, 320, 180, num_objects=5)
    truths = sequence_truth(sequence, 12)
    for index in (0, 11):
        rendered = truth_of(sequence.frame(index))
        np.testing.assert_array_equal(rendered.ids, truths[index].ids)
        np.testing.assert_allclose(rendered.boxes, truths[index].boxes)
    back = read_mot(write_mot(tmp_path / "gt.txt", truths))
    assert len(back) == 12
    for a, b in zip(truths, back, strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    first = (tmp_path / "gt.txt").read_text().splitlines()[0].split(",")
    assert first[0] == "1" and len(first) == 9 and int(first[1]) >= 1
    write_clip(tmp_path / "c.mp4", 15_101, 12, 320, 180, num_objects=5)
    assert read_mot(mot_path(tmp_path / "c.mp4"))[11].ids.tolist() == truths[11].ids.tolist()


def captured(index: int, session: int = 0, position: int | None = None) -> CapturedFrame:
    now = time.monotonic()
    return CapturedFrame(
        "cam",
        index,
        session,
        index if position is None else position,
        None,
        time.time(),
        now,
        None,
        np.zeros((4, 4, 3), np.uint8),
    )


def answer(index: int, boxes: list[list[float]], **frame) -> Result:
    detections = [Detection(tuple(b), 0.9, 0, "disc") for b in boxes]
    return Result(captured(index, **frame), detections, 0.01, "localhost:8001")


def ids_of(result: Result) -> list[int | None]:
    return [d.track_id for d in result.detections]


def across(x: float) -> list[list[float]]:
    """A 40 px wide box centred on column x, rows 10-30 (within the test lines' extent)."""
    return [[x - 20, 10.0, x + 20, 30.0]]


def test_client_stage_restarts_on_new_session_and_never_reuses_ids() -> None:
    tracking = Tracking(count_line=CountLine(50, 0, 50, 100))
    assert ids_of(tracking.apply(answer(0, across(20)))) == [1]
    assert ids_of(tracking.apply(answer(1, across(22)))) == [1]
    # Reconnect: session 1 sees an object on the line's other side. Tracks restart, so
    # it is a new track with a new id, and left-in-session-0 to right-in-session-1 is no
    # crossing.
    assert ids_of(tracking.apply(answer(2, across(80), session=1, position=0))) == [2]
    assert ids_of(tracking.apply(answer(3, across(78), session=1, position=1))) == [2]
    assert tracking.crossings() == {"cam": {"in": 0, "out": 0}}
    # Within session 1, going back across is counted.
    for position, x in enumerate((70, 60, 50, 40, 30), start=2):
        assert ids_of(
            tracking.apply(answer(2 + position, across(x), session=1, position=position))
        ) == [2]
    assert tracking.crossings() == {"cam": {"in": 1, "out": 0}}


def test_client_stage_ignores_late_answers_of_an_older_session() -> None:
    tracking = Tracking(count_line=CountLine(50, 0, 50, 100))
    assert ids_of(tracking.apply(answer(0, across(20)))) == [1]
    assert ids_of(tracking.apply(answer(1, across(22)))) == [1]
    assert ids_of(tracking.apply(answer(3, across(30), session=1, position=0))) == [2]
    assert ids_of(tracking.apply(answer(4, across(40), session=1, position=1))) == [2]
    # Session 0's answer for frame 2, in flight at the reconnect, arrives now, with the
    # object past the line: no ids, no restart, no crossing.
    late = tracking.apply(answer(2, across(70) + across(22), session=0, position=2))
    assert ids_of(late) == [None, None]
    assert tracking.crossings() == {"cam": {"in": 0, "out": 0}}
    # Session 1 goes on with the same track (no id burned) and its crossing, begun
    # before the late answer, counts once.
    for position, x in enumerate((50, 60, 70), start=2):
        assert ids_of(
            tracking.apply(answer(3 + position, across(x), session=1, position=position))
        ) == [2]
    assert tracking.crossings() == {"cam": {"in": 0, "out": 1}}
    # The next session's first track takes the next id.
    assert ids_of(tracking.apply(answer(8, across(20), session=2, position=0))) == [3]
    assert tracking.crossings() == {"cam": {"in": 0, "out": 1}}


def test_count_line_forgets_ended_tracks_and_still_counts() -> None:
    tracking = Tracking(count_line=CountLine(50, 0, 50, 800))
    lanes, objects, path = 4, 2_000, (30.0, 38, 46, 54, 62, 70)
    remembered, seen = [], set()
    for frame in range(objects // lanes * len(path)):
        # Lane k runs one object after another across the line, rightwards ("out") in
        # lanes 0 and 1, leftwards ("in") in lanes 2 and 3; each track lives 6 frames.
        boxes = []
        for lane in range(lanes):
            x = path[frame % len(path)] if lane < 2 else path[-1 - frame % len(path)]
            # Every other object runs 100 px lower, so none starts within recover_distance
            # (3 sizes) of the track that just ended: each is a new object.
            y = 200.0 * lane + 10 + 100 * (frame // len(path) % 2)
            boxes.append([x - 10, y, x + 10, y + 20])
        seen.update(ids_of(tracking.apply(answer(frame, boxes))))
        remembered.append(len(tracking._cameras["cam"].counter))
    assert seen - {None} == set(range(1, objects + 1))  # one id per object, none burned
    assert tracking.crossings() == {"cam": {"in": objects // 2, "out": objects // 2}}
    # An ended track's side is dropped: the tracker keeps a track max_age (30) frames
    # after its last detection, so each lane holds at most 30 / 6 + 1 tracks.
    assert max(remembered) <= lanes * 6, max(remembered)


def test_client_stage_bridges_failover_gaps_and_labels_late_answers() -> None:
    tracking = Tracking()
    step = np.array([4.0, 0.0, 4.0, 0.0])
    box = np.array([10.0, 10.0, 40.0, 40.0])
    for index in range(4):
        assert ids_of(tracking.apply(answer(index, [list(box + index * step)]))) == [1]
    # Frames 4..15 were lost while the camera failed over to another server.
    assert ids_of(tracking.apply(answer(16, [list(box + 16 * step)]))) == [1]
    # An answer for frame 15 arrives late: labelled, and the track does not go back.
    late = tracking.apply(answer(15, [list(box + 15 * step), [300.0, 300, 320, 320]]))
    assert ids_of(late) == [1, None]
    assert ids_of(tracking.apply(answer(17, [list(box + 17 * step)]))) == [1]


def test_track_ids_reach_records_drawings_tables_and_metrics() -> None:
    tracked = Detection((40.0, 30.0, 100.0, 90.0), 0.9, 1, "box", track_id=12)
    assert tracked.as_dict()["track_id"] == 12
    assert "track_id" not in Detection((0, 0, 1, 1), 0.5, 0, "disc").as_dict()
    image = np.zeros((120, 160, 3), np.uint8)
    untracked = Detection(tracked.box, 0.9, 1, "box")
    drawn = annotate(image, [tracked])
    assert not np.array_equal(drawn, annotate(image, [untracked]))  # id colour, "#12"
    crossings = {"cam": {"in": 3, "out": 1}}
    collector = IngestCollector(Accounting(["cam"]), dict, lambda: crossings)
    samples = {
        (s.name, s.labels["direction"]): s.value
        for family in collector.collect()
        for s in family.samples
        if family.name == "camdet_client_line_crossings"
    }
    assert samples == {
        ("camdet_client_line_crossings_total", "in"): 3,
        ("camdet_client_line_crossings_total", "out"): 1,
    }
    table = totals_table(Accounting(["cam"]).snapshot(), crossings=crossings)
    assert table.columns[-1].header == "line in/out"
    assert list(table.columns[-1].cells) == ["3/1"]


def _behind_a_pillar(settings: TrackerSettings) -> set[int]:
    """Ids given to one object crossing behind a pillar at x 200-300 (boxes clipped there)."""
    tracker, ids = ByteTracker(settings), set()
    for frame in range(50):
        left, right = 10.0 * frame, 10.0 * frame + 40
        if left < 200 < right:
            right = 200.0  # going in: only the part left of the pillar shows
        elif left < 300 < right:
            left = 300.0  # coming out: a sliver at the pillar's edge first
        elif left >= 200 and right <= 300:
            continue  # hidden
        if right - left >= 8:
            found = tracker.update(np.array([[left, 100, right, 140]]), np.ones(1), np.zeros(1))
            ids.update(int(i) for i in found if i != NO_TRACK)
    return ids


def test_an_object_keeps_its_id_behind_a_pillar() -> None:
    """Lost tracks recover a nearby detection (MODEL_CARD.md, Tracking: IDF1 0.38 -> 0.89)."""
    assert _behind_a_pillar(TrackerSettings()) == {1}
    # ByteTrack's IoU alone cannot: the sliver coming out starts a new id.
    assert len(_behind_a_pillar(TrackerSettings(recover_distance=0, direction_weight=0))) == 2


def test_shape_decides_between_two_tracks_that_overlap_a_detection_alike() -> None:
    """Where one object hides another, the one detection left goes to the track of its
    shape (pillar scenes: 1.08 -> 0.65 switches per 1,000 object-frames)."""
    wide = Track(BoxKalman(np.array([118.0, 100, 178, 130])), 0, track_id=1)  # 60x30
    squarish = Track(BoxKalman(np.array([110.0, 97, 150, 133])), 0, track_id=2)  # 40x36
    detection = np.array([[100.0, 100, 160, 130]])  # 60x30: IoU 0.54 and 0.59
    boxes = np.array([wide.kalman.box, squarish.kalman.box])
    extra = shape_cost([wide, squarish], detection, 0.3)
    assert extra[0, 0] == pytest.approx(0.0, abs=1e-6) and extra[1, 0] > 0.15
    assert match(boxes, detection, 0.2) == [(1, 0)]  # IoU alone: the wrong track
    assert match(boxes, detection, 0.2, extra) == [(0, 0)]


RED, BLUE = np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.2, 0.8])


def _out_from_behind(colors: bool) -> list[int]:
    """A red object goes behind something; a blue one and then the red one come out.

    Returns the ids of [blue, red] in the frame both are first seen.
    """
    tracker = ByteTracker()
    for frame in range(10):  # red, 40 px wide, 10 px a frame to the right
        box = np.array([[100.0 + 10 * frame, 100, 140 + 10 * frame, 140]])
        tracker.update(box, [0.9], [0], colors=RED[None] if colors else None)
    tracker.update(np.empty((0, 4)), [], [], dt=5)  # hidden
    predicted = tracker.tracks[0].kalman.box
    # Both within 3 sizes (120 px) of red's predicted box, neither overlapping it; blue nearer.
    right = np.array([1.0, 0, 1, 0])
    both = np.stack([predicted + 50 * right, predicted + 90 * right])
    ids = tracker.update(both, [0.9, 0.9], [0, 0], colors=np.stack([BLUE, RED]) if colors else None)
    return ids.tolist()


def test_a_lost_track_takes_back_only_a_detection_of_its_colour() -> None:
    """With the server's box colours, the red object gets its id back, and blue none yet."""
    assert _out_from_behind(colors=True) == [NO_TRACK, 1]
    # By motion alone, the nearer object takes the id.
    assert _out_from_behind(colors=False) == [1, NO_TRACK]


def _clipped_then_whole(settings: TrackerSettings) -> int:
    """The id of an object whose box an occluder's corner clipped on the way in.

    Its last boxes shrink from 60 to 15 px; it comes out whole 150 px past where its
    clipped box is predicted: over 3 sizes of the clipped box, under 3 of the whole one.
    """
    tracker = ByteTracker(settings)
    for frame in range(12):
        side = 60.0 if frame < 8 else 60.0 - 15 * (frame - 7)
        x = 100.0 + 10 * frame
        tracker.update(np.array([[x, 100, x + side, 100 + side]]), [0.9], [0])
    tracker.update(np.empty((0, 4)), [], [], dt=6)
    x = tracker.tracks[0].kalman.box[0] + 150
    return int(tracker.update(np.array([[x, 100, x + 60, 160]]), [0.9], [0])[0])


def test_recovery_measures_a_track_by_its_box_before_the_occluder_clipped_it() -> None:
    """MODEL_CARD.md, Tracking: with colours, pillar seeds 16000-16001 IDF1 0.86 -> 0.94."""
    assert _clipped_then_whole(TrackerSettings()) == 1
    assert _clipped_then_whole(TrackerSettings(size_memory=1)) == NO_TRACK


def test_colour_decides_between_two_tracks_that_overlap_a_detection_alike() -> None:
    """Where two objects cross, the detection goes to the track of its colour."""
    red = Track(BoxKalman(np.array([100.0, 100, 140, 140])), 0, track_id=1, color=RED)
    blue = Track(BoxKalman(np.array([104.0, 100, 144, 140])), 0, track_id=2, color=BLUE)
    detection = np.array([[103.0, 100, 143, 140]])  # nearer blue by IoU
    boxes = np.array([red.kalman.box, blue.kalman.box])
    extra = color_cost([red, blue], RED[None], gate=0.25, weight=0.5)
    assert extra[0, 0] == 0 and extra[1, 0] == pytest.approx(0.5)
    assert match(boxes, detection, 0.2) == [(1, 0)]
    assert match(boxes, detection, 0.2, extra) == [(0, 0)]


def test_a_tracks_colour_follows_slow_changes_and_ignores_one_frame() -> None:
    track = Track(BoxKalman(np.array([0.0, 0, 10, 10])), 0)
    settings = TrackerSettings()
    track.observe(np.array([0.0, 0, 10, 10]), RED, settings)
    np.testing.assert_allclose(track.color, RED)
    track.observe(np.array([0.0, 0, 10, 10]), BLUE, settings)  # another object overlaps it
    assert np.linalg.norm(track.color - RED) < settings.color_gate


def test_evaluation_caches_detections_with_their_colours(tmp_path: Path) -> None:
    """``--detections`` keeps the colours, so settings compare on exactly the same input."""
    from camdet.tracking import evaluate

    path, seed = tmp_path / "detections.npz", evaluate.HELD_OUT_SEEDS[0]
    run = [1, 1.0, 640, 360, 30, evaluate.DEFAULT_ONNX]
    first = evaluate.evaluate(*run, detections_path=path, first_seed=seed)
    frames = evaluate.load_detections(path)[0]
    assert sum(len(f.boxes) for f in frames) > 30
    assert all(f.colors.shape == (len(f.boxes), 3) for f in frames)
    again = evaluate.evaluate(*run, detections_path=path, first_seed=seed)
    assert again["detections_read_from"] == str(path) and again["first_seed"] == seed
    assert again["scores"]["idf1"] == first["scores"]["idf1"]
    # Another seed's clips do not score against these detections.
    with pytest.raises(ValueError, match=f"holds the clips of seed {seed}, not 15000"):
        evaluate.evaluate(*run, detections_path=path)
    # Detections kept before colours existed load without them (motion alone).
    plain = [evaluate.FrameDetections(f.boxes, f.scores, f.class_ids) for f in frames]
    evaluate.save_detections(tmp_path / "old.npz", [plain])
    assert all(f.colors is None for f in evaluate.load_detections(tmp_path / "old.npz")[0])
