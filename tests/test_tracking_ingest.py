"""Tracks end to end: a synthetic clip -> ingest client -> real tritonserver -> track ids.

Both ways a camera reaches the server are tracked: H.264 access units passed through to
``detect_video``, and frames decoded on the client and sent as JPEGs to ``detect``. The clip
is a tracking scene (a pillar, designed crossings: :mod:`camdet.scenes.events`) and holds at
least one occlusion by the pillar and one crossing, checked on its ground truth. The ids
are scored with motmetrics against the clip's exact MOT ground truth, and the count line's
crossings against the crossings of the ground-truth tracks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from camdet.client.config import CameraConfig
from camdet.client.ingest_options import IngestOptions, Mode
from camdet.client.sinks import CallbackSink, Result
from camdet.client.streamer import BackgroundIngest, Ingest

from camdet.scenes import TrackingEvents, mot_path, write_clip
from camdet.scenes.mot import TrackTruth, read_mot
from camdet.tracking.bytetrack import NO_TRACK
from camdet.tracking.evaluate import FrameDetections, accumulate, scene_events, score
from camdet.tracking.lines import CountLine, LineCounter

pytestmark = [pytest.mark.server, pytest.mark.slow]

WIDTH, HEIGHT, FPS, FRAMES = 640, 360, 30, 60  # 2 s at 30 fps: a short CI clip
SEED = 15_201  # CI's seed before tracking scenes; its 2 s hold a pillar pass and a crossing
# Measured on this clip: IDF1 0.997 and no switch on both paths, the 15-frame pillar pass
# bridged (before the boxes' colours, the JPEG path (q80) swapped two ids for two frames at
# the designed crossing, frame 30: 2 switches). Losing the pillar object's id would score
# 0.942, so the bound catches that; one switch is left as room.
MIN_IDF1 = 0.95
MAX_SWITCHES = 1
IN_FLIGHT = 4
LINE = CountLine(WIDTH / 2, 0, WIDTH / 2, HEIGHT)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[TrackTruth]]:
    path = tmp_path_factory.mktemp("tracking") / "tracks.mp4"
    write_clip(path, SEED, FRAMES, WIDTH, HEIGHT, FPS, num_objects=(6, 8), events=TrackingEvents())
    truths = read_mot(mot_path(path), FRAMES)
    events = scene_events(truths)
    assert events["occlusions_by_occluders"] >= 1 and events["crossings"] >= 1, events
    return path, truths


def stream(server, path: Path, decode_on_client: bool) -> list[Result]:
    camera = CameraConfig("cam", str(path), pace=False, decode_on_client=decode_on_client)
    results: list[Result] = []
    # Requests in flight together are often answered out of order (the server runs
    # several instances: 8 of 8 runs of this clip at 2 in flight); the tracker must still
    # see the frames in order, or a late frame at the crossing swaps ids.
    options = IngestOptions(mode=Mode.CAPACITY, max_in_flight=IN_FLIGHT, count_line=LINE)
    ingest = Ingest([camera], [server.grpc_url], [CallbackSink(results.append)], options)
    with BackgroundIngest(ingest) as running:
        assert running.wait(240)
        running.stop()
    assert [r.frame.position for r in results] == list(range(FRAMES)), "delivered out of order"
    assert ingest.tracking is not None
    crossings = ingest.tracking.crossings()["cam"]
    truth_crossings = line_crossings(read_mot(mot_path(path), FRAMES))
    assert crossings == truth_crossings, (crossings, truth_crossings)
    return results


def line_crossings(truths: list[TrackTruth]) -> dict[str, int]:
    counter = LineCounter(LINE)
    for truth in truths:
        counter.update(truth.ids, truth.boxes)
    return {"in": counter.counts["in"], "out": counter.counts["out"]}


@pytest.mark.parametrize("decode_on_client", [False, True], ids=["h264", "jpeg"])
def test_track_ids_match_ground_truth_identities(server, clip, decode_on_client: bool) -> None:
    path, truths = clip
    results = stream(server, path, decode_on_client)
    detections, ids = [], []
    for result in results:
        found = result.detections
        boxes = np.array([d.box for d in found], dtype=np.float32).reshape(-1, 4)
        scores = np.array([d.score for d in found], dtype=np.float32)
        classes = np.array([d.class_id for d in found], dtype=np.int64)
        # The server reads each box's colour on both paths: the tracker's appearance cue.
        assert all(d.color is not None and 0 <= min(d.color) <= max(d.color) <= 1 for d in found)
        detections.append(FrameDetections(boxes, scores, classes))
        track_ids = [NO_TRACK if d.track_id is None else d.track_id for d in found]
        ids.append(np.array(track_ids, dtype=np.int64))
    scores = score([accumulate(truths, detections, ids)], 0.0)
    assert scores.idf1 >= MIN_IDF1, scores
    assert scores.id_switches <= MAX_SWITCHES, scores
