"""Camera ingest end to end: real RTSP/MJPEG cameras -> client -> real tritonserver.

Cameras are a GStreamer RTSP server streaming synthetic H.264 clips and a stdlib HTTP
MJPEG camera, all on loopback; detections are checked against the clips' exact ground
truth, and the accounting identity (captured = answered + dropped + failed + in flight)
is sampled every 50 ms while streaming.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import pytest
from camdet.client.backoff import BackoffPolicy
from camdet.client.config import CameraConfig
from camdet.client.ingest_options import IngestOptions, Mode
from camdet.client.sinks import CallbackSink, JsonLinesSink, Result
from camdet.client.streamer import BackgroundIngest, Ingest

from camdet.scenes import encode_jpeg
from tests.helpers.clips import CLIP_HEIGHT, CLIP_WIDTH
from tests.helpers.ingest import Watch, assert_boxes_inside, by_camera, score, wait_until
from tests.helpers.mjpeg import MjpegServer
from tests.helpers.rtsp import RtspServer, free_port, require_gst_rtsp

pytestmark = [pytest.mark.server, pytest.mark.slow]

MIN_RECALL = MIN_PRECISION = 0.8  # at IoU 0.5, detections with score >= 0.5
CLIP_SEEDS = (21, 22, 23)  # the clips of the conftest's ``clips`` (RTSP /cam0../cam2)


def test_many_cameras_at_once_get_detections_that_match_ground_truth(
    server, rtsp, clips, tmp_path: Path
) -> None:
    with av.open(str(clips[2].path)) as container:
        jpegs = [encode_jpeg(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    results: list[Result] = []
    with MjpegServer(jpegs, fps=10) as mjpeg:
        cameras = {
            "rtsp0": (CameraConfig("rtsp0", rtsp.url("/cam0")), clips[0]),
            "rtsp1": (CameraConfig("rtsp1", rtsp.url("/cam1")), clips[1]),
            "rtsp2": (CameraConfig("rtsp2", rtsp.url("/cam2")), clips[2]),
            "mjpeg": (CameraConfig("mjpeg", mjpeg.url), clips[2]),
            "file": (CameraConfig("file", str(clips[1].path), loop=True), clips[1]),
        }
        ingest = Ingest(
            [camera for camera, _ in cameras.values()],
            [server.grpc_url],
            [CallbackSink(results.append), JsonLinesSink(tmp_path / "out.jsonl")],
        )
        with Watch(ingest.accounting) as watch, BackgroundIngest(ingest) as running:
            wait_until(
                lambda: all(t.answered >= 8 for t in ingest.accounting.snapshot().values()),
                45,
                "8 answers from every camera",
            )
            totals = running.stop()
    assert watch.samples > 20 and not watch.violations
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    grouped = by_camera(results)
    for camera_id, (_, clip) in cameras.items():
        camera_totals = totals[camera_id]
        assert camera_totals.balanced and camera_totals.in_flight == 0, camera_totals
        answered = grouped[camera_id]
        assert len(answered) == camera_totals.answered
        assert sum(line["camera"] == camera_id for line in lines) == camera_totals.answered
        assert {r.server for r in answered} == {server.grpc_url}
        assert_boxes_inside(answered, CLIP_WIDTH, CLIP_HEIGHT)
        found = score(answered, clip)
        assert found.truths > 10, (camera_id, found)
        assert found.recall >= MIN_RECALL and found.precision >= MIN_PRECISION, (camera_id, found)
    mjpeg_bytes = {r.frame.encoded for r in grouped["mjpeg"]}
    assert mjpeg_bytes <= set(jpegs)  # MJPEG frames went out byte for byte


def test_rtsp_camera_reconnects_when_its_server_comes_back(server, clips) -> None:
    require_gst_rtsp()
    results: list[Result] = []
    with RtspServer({"/a": clips[0].path, "/b": clips[1].path}) as rtsp:
        cameras = [CameraConfig("a", rtsp.url("/a")), CameraConfig("b", rtsp.url("/b"))]
        options = IngestOptions(reconnect=BackoffPolicy(0.2, 1.0))
        ingest = Ingest(cameras, [server.grpc_url], [CallbackSink(results.append)], options)
        with Watch(ingest.accounting) as watch, BackgroundIngest(ingest) as running:
            wait_until(
                lambda: all(t.answered >= 3 for t in ingest.accounting.snapshot().values()),
                30,
                "first answers",
            )
            rtsp.stop()
            time.sleep(1.5)
            during = ingest.accounting.snapshot()
            time.sleep(1.5)
            after = ingest.accounting.snapshot()
            assert {c: t.captured for c, t in during.items()} == {
                c: t.captured for c, t in after.items()
            }, "frames captured while the cameras were gone"
            rtsp.start()
            wait_until(
                lambda: all(
                    sum(r.frame.session > 0 for r in by_camera(results)[c.id]) >= 3 for c in cameras
                ),
                30,
                "answers after the reconnect",
            )
            totals = running.stop()
    assert watch.samples > 20 and not watch.violations
    grouped = by_camera(results)
    for camera, clip in zip(cameras, clips, strict=False):
        assert totals[camera.id].reconnects >= 1
        assert totals[camera.id].balanced and totals[camera.id].in_flight == 0
        resumed = [r for r in grouped[camera.id] if r.frame.session > 0]
        found = score(resumed, clip)  # positions restart at the clip's first frame
        assert found.recall >= MIN_RECALL and found.precision >= MIN_PRECISION, found
        indices = [r.frame.index for r in grouped[camera.id]]
        assert len(set(indices)) == len(indices)


def totals_from_table(text: str) -> dict[str, dict[str, int]]:
    """Per-camera counters from the final table the CLI prints."""
    columns = ("captured", "answered", "dropped", "failed", "in_flight", "reconnects")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line) if c.strip()]
        # The counters are the table's last columns; latency and lag columns precede them.
        if len(cells) > len(columns) and all(c.isdigit() for c in cells[-len(columns) :]):
            rows[cells[0]] = dict(zip(columns, map(int, cells[-len(columns) :]), strict=True))
    return rows


def test_cli_streams_a_camera_list_until_sigterm_and_prints_totals(
    server, rtsp, clips, tmp_path: Path
) -> None:
    camera_list = tmp_path / "cameras.yaml"
    camera_list.write_text(
        "cameras:\n"
        f"  - {{id: door, url: '{rtsp.url('/cam0')}', fps: 5}}\n"
        f"  - {{id: replay, url: '{clips[1].path}', loop: true}}\n"
    )
    metrics_port = free_port()
    out = tmp_path / "out.jsonl"
    command = [
        sys.executable, "-m", "camdet.client.cli",
        "--cameras", str(camera_list), "--server", server.grpc_url,
        "--jsonl", str(out), "--video-dir", str(tmp_path / "video"),
        "--metrics-port", str(metrics_port), "--no-live",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:

        def answered(camera: str) -> int:
            text = out.read_text() if out.exists() else ""
            return sum(json.loads(line)["camera"] == camera for line in text.splitlines())

        wait_until(lambda: answered("door") >= 3 and answered("replay") >= 3, 60, "answers")
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            metrics = response.read().decode()
        assert 'camdet_client_frames_answered_total{camera="door"}' in metrics
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    rows = totals_from_table(stdout)
    assert set(rows) == {"door", "replay"}, stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for camera, row in rows.items():
        assert row["in_flight"] == 0, row
        assert row["captured"] == row["answered"] + row["dropped"] + row["failed"], row
        assert row["answered"] == sum(line["camera"] == camera for line in lines)
        with av.open(str(tmp_path / "video" / f"{camera}.mp4")) as video:
            frames = sum(1 for _ in video.decode(video=0))
        assert 1 <= frames <= row["answered"]
    # door is decimated from 10 to 5 fps; replay keeps the file's 10 fps.
    assert rows["door"]["captured"] < 0.7 * rows["replay"]["captured"], rows


def test_damaged_frames_are_answered_flagged_and_counted(server, tmp_path: Path) -> None:
    from tests.helpers.images import rst_jpeg

    whole = rst_jpeg()
    cut = whole[: len(whole) // 2] + b"\xff\xd9"  # cut short, end marker added back
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, data in enumerate([whole, cut, whole]):
        (folder / f"{index:03d}.jpg").write_bytes(data)
    results: list[Result] = []
    ingest = Ingest(
        [CameraConfig("folder", str(folder))],
        [server.grpc_url],
        [CallbackSink(results.append), JsonLinesSink(tmp_path / "out.jsonl")],
        IngestOptions(mode=Mode.CAPACITY),  # every frame of the folder is sent
    )
    with BackgroundIngest(ingest) as running:
        wait_until(lambda: ingest.accounting.snapshot()["folder"].answered >= 3, 60, "3 answers")
        totals = running.stop()["folder"]
    first = sorted((r for r in results if r.frame.session == 0), key=lambda r: r.frame.position)
    assert [r.damaged for r in first[:3]] == [False, True, False]
    assert totals.balanced and totals.damaged == sum(r.damaged for r in results) >= 1
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sum(line["damaged"] for line in lines) == totals.damaged


def test_answers_reach_the_sinks_in_send_order_around_a_refused_frame(
    server, tmp_path: Path
) -> None:
    """Four requests in flight are answered in any order; the sinks (and the tracker) get
    them in the order the frames were sent. A refused frame (refused fast, by validate)
    holds none back, and lets none overtake an earlier frame still in flight."""
    from tests.helpers.images import bad_huffman_table, rst_jpeg

    whole = rst_jpeg()
    broken = bad_huffman_table(whole)
    refused = set(range(2, 24, 3))
    frames = [broken if index in refused else whole for index in range(24)]
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, data in enumerate(frames):
        (folder / f"{index:03d}.jpg").write_bytes(data)
    results: list[Result] = []
    ingest = Ingest(
        [CameraConfig("folder", str(folder))],
        [server.grpc_url],
        [CallbackSink(results.append)],
        IngestOptions(mode=Mode.CAPACITY, max_in_flight=4),
    )
    with BackgroundIngest(ingest) as running:
        assert running.wait(120)  # a folder camera ends after its last frame
        totals = running.stop()["folder"]
    assert (totals.captured, totals.answered, totals.failed) == (24, 16, 8), totals
    positions = [r.frame.position for r in results]
    assert positions == [p for p in range(len(frames)) if p not in refused], positions
