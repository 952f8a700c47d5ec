"""Ingest against a slow, a killed and a restarted tritonserver, and fail-over between two.

The slow server is a real portable tritonserver, TLS-only on gRPC, whose detector spends
:data:`DELAY_S` more per frame: it serves at most ``1 / DELAY_S`` frames per second in
all, less than the cameras deliver.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from camdet.client.config import CameraConfig
from camdet.client.ingest_options import IngestOptions, Mode
from camdet.client.servers import Endpoint, TlsFiles, rendezvous_order
from camdet.client.sinks import CallbackSink, Result
from camdet.client.streamer import BackgroundIngest, Ingest

from camdet.serving.server import TritonServer
from tests.helpers.clips import CLIP_HEIGHT, CLIP_WIDTH, make_clips
from tests.helpers.ingest import Watch, assert_boxes_inside, score, wait_until
from tests.helpers.servers import self_signed_certificate, slow_repository, tls_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

DELAY_S = 0.2
"""Extra detector time per frame of the slow server, seconds."""
CLIP_SEEDS = (31, 32, 33)  # the clips of the conftest's ``clips`` (RTSP /cam0../cam2)


@dataclass
class SlowServer:
    """The slow TLS server and how to reach it."""

    server: TritonServer
    certificate: Path

    @property
    def url(self) -> str:
        return f"grpcs://{self.server.grpc_url}"

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(root_certificates=self.certificate)

    def running(self) -> SlowServer:
        """The server, started again if an earlier test left it dead."""
        if not self.server.is_running():
            self.server.start()
        return self


@pytest.fixture(scope="module")
def slow(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("slow_server")
    certificate = self_signed_certificate(workdir)
    server = tls_server(
        slow_repository(repository, workdir / "repo", DELAY_S), workdir, certificate
    )
    with server.start():
        yield SlowServer(server, certificate[0])
    assert not server.is_running()


def answered_by(results: list[Result]) -> Counter:
    return Counter(r.frame.camera_id for r in results)


def test_slow_server_in_realtime_mode_bounds_latency_and_counts_drops(slow, rtsp) -> None:
    slow.running()
    results: list[Result] = []
    cameras = [CameraConfig(f"c{i}", rtsp.url(f"/cam{i}")) for i in range(2)]
    ingest = Ingest(cameras, [slow.url], [CallbackSink(results.append)], tls=slow.tls)
    with Watch(ingest.accounting) as watch, BackgroundIngest(ingest) as running:
        time.sleep(10)
        totals = running.stop()
    assert watch.samples > 50 and not watch.violations
    for camera in cameras:
        t = totals[camera.id]
        assert t.balanced and t.in_flight == 0, t
        assert t.captured >= 70, t  # the readers kept the cameras' pace (10 fps each)
        assert t.answered >= 4, t
        assert t.dropped >= t.captured / 2, t  # the server answers < 5 of the 20 frames/s
    # Without dropping, the last frames would have waited behind > 7 s of backlog.
    worst = max(r.latency_s for r in results)
    assert worst < 4.0, worst
    assert_boxes_inside(results, CLIP_WIDTH, CLIP_HEIGHT)


def test_slow_server_in_capacity_mode_answers_every_frame(slow, clips) -> None:
    slow.running()
    results: list[Result] = []
    frames = 20
    files = make_clips(clips[0].path.parent, [31, 32], frames=frames)
    cameras = [CameraConfig(f"f{i}", str(clip.path)) for i, clip in enumerate(files)]
    options = IngestOptions(mode=Mode.CAPACITY, max_in_flight=2)
    ingest = Ingest(cameras, [slow.url], [CallbackSink(results.append)], options, slow.tls)
    held = []
    with Watch(ingest.accounting) as watch, BackgroundIngest(ingest) as running:
        while not running.wait(0.05):
            held.append(max(t.in_flight for t in ingest.accounting.snapshot().values()))
            assert len(held) < 1200, "capacity run did not finish within 60 s"
        totals = running.stop()
    assert not watch.violations
    # Back-pressure: never more than the buffer, the requests and the reader's frame.
    assert max(held) <= options.buffer_size + options.max_in_flight + 1
    for camera, clip in zip(cameras, files, strict=True):
        t = totals[camera.id]
        assert (t.captured, t.answered, t.dropped, t.failed, t.in_flight) == (
            frames,
            frames,
            0,
            0,
            0,
        )
        mine = sorted(
            (r for r in results if r.frame.camera_id == camera.id), key=lambda r: r.frame.index
        )
        assert [r.frame.position for r in mine] == list(range(frames))
        found = score(mine, clip)
        assert found.recall >= 0.8 and found.precision >= 0.8, found


def test_triton_killed_and_restarted_mid_stream(slow, rtsp) -> None:
    slow.running()
    results: list[Result] = []
    cameras = [CameraConfig(f"k{i}", rtsp.url(f"/cam{i}")) for i in range(2)]
    ingest = Ingest(cameras, [slow.url], [CallbackSink(results.append)], tls=slow.tls)
    with Watch(ingest.accounting) as watch, BackgroundIngest(ingest) as running:
        wait_until(lambda: min(answered_by(results)[c.id] for c in cameras) >= 2, 30, "answers")
        slow.server.kill()
        killed_at = time.monotonic()
        time.sleep(3)
        down = ingest.accounting.snapshot()
        assert ingest.assignment() == {c.id: None for c in cameras}
        slow.server.start()  # ~15 s while the client keeps reading, dropping and waiting
        before = answered_by(results)
        wait_until(
            lambda: all(answered_by(results)[c.id] >= before[c.id] + 3 for c in cameras),
            30,
            "answers after the restart",
        )
        totals = running.stop()
    assert watch.samples > 100 and not watch.violations
    for camera in cameras:
        lost = down[camera.id].failed + down[camera.id].dropped
        assert lost >= 10, down[camera.id]  # the outage's frames are counted, not lost
        t = totals[camera.id]
        assert t.balanced and t.in_flight == 0, t
    resumed = [r for r in results if r.frame.captured_mono > killed_at]
    assert {r.frame.camera_id for r in resumed} == {c.id for c in cameras}


def test_cameras_fail_over_to_the_other_server(server, slow, rtsp) -> None:
    slow.running()
    endpoints = [Endpoint.parse(server.grpc_url), Endpoint.parse(slow.url)]
    prefers = {f"cam{i}": rendezvous_order(f"cam{i}", endpoints)[0].url for i in range(20)}
    to_slow = [c for c, url in prefers.items() if url == slow.url][:2]
    to_fast = [c for c, url in prefers.items() if url == server.grpc_url][:1]
    cameras = [
        CameraConfig(camera_id, rtsp.url(f"/cam{i}"))
        for i, camera_id in enumerate(to_slow + to_fast)
    ]
    results: list[Result] = []
    ingest = Ingest(
        cameras, [e.url for e in endpoints], [CallbackSink(results.append)], tls=slow.tls
    )
    with Watch(ingest.accounting) as watch, BackgroundIngest(ingest) as running:
        wait_until(lambda: len(answered_by(results)) == 3, 30, "answers from every camera")
        assert ingest.assignment() == {c.id: prefers[c.id] for c in cameras}
        slow.server.kill()
        killed_at = time.monotonic()
        wait_until(
            lambda: all(
                sum(
                    r.frame.camera_id == c and r.server == server.grpc_url
                    and r.frame.captured_mono > killed_at
                    for r in results
                ) >= 3
                for c in to_slow
            ),
            30,
            "the slow server's cameras answered by the other server",
        )  # fmt: skip
        assert ingest.assignment() == {c.id: server.grpc_url for c in cameras}
        totals = running.stop()
    assert not watch.violations
    for camera in cameras:
        assert totals[camera.id].balanced and totals[camera.id].in_flight == 0
    first = {}
    for r in results:
        first.setdefault(r.frame.camera_id, r.server)
    assert first == {c.id: prefers[c.id] for c in cameras}
