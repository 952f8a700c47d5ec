"""Live cameras must not hide lag: capture time from the stream clock, lag warnings, sessions.

Units: the stream clock and the lag alarm. End to end: a real 25 fps RTSP camera
(GStreamer on loopback) read by a real :class:`CameraReader` in capacity mode while the
consumer takes 3 frames/s, as a slow server would: the frames' capture time (stream
clock) falls behind while their read time does not; and a camera that drops and comes
back after failed reconnect attempts numbers its sessions by successful connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from camdet.client.accounting import Accounting
from camdet.client.backoff import BackoffPolicy
from camdet.client.capture_clock import PTS_RESET_S, StreamClock
from camdet.client.config import CameraConfig
from camdet.client.lag import LagAlarm
from camdet.client.reader import CameraReader, CapturedFrame, FrameBuffer
from camdet.client.sources import open_source

from camdet.scenes import write_clip
from tests.helpers.clips import CLIP_HEIGHT, CLIP_WIDTH
from tests.helpers.ingest import wait_until
from tests.helpers.rtsp import RtspServer, require_gst_rtsp

CAMERA_FPS = 25
SERVER_FPS = 3

# ------------------------------------------------------------------------------- units


def test_stream_clock_takes_the_least_delayed_frame_as_its_origin() -> None:
    clock = StreamClock()
    # Probing buffered the first frames: they arrive together, late.
    assert clock.capture_time(0.0, 100.5) == 100.5
    assert clock.capture_time(0.04, 100.5) == pytest.approx(100.5)
    # Then frames arrive live; the origin settles on the least delayed one.
    assert clock.capture_time(1.0, 101.0) == pytest.approx(101.0)
    # Back-pressure: read 5 s after capture, the capture time stays on the stream clock.
    assert clock.capture_time(2.0, 107.0) == pytest.approx(102.0)


def test_stream_clock_without_pts_or_after_a_timeline_reset_uses_arrival() -> None:
    clock = StreamClock()
    assert clock.capture_time(None, 50.0) == 50.0
    clock.capture_time(100.0, 60.0)
    # The camera restarted its clock: a new origin, not 100 s of lag.
    assert clock.capture_time(100.0 - 2 * PTS_RESET_S, 61.0) == 61.0


def test_lag_alarm_warns_at_each_doubling_and_when_caught_up(caplog) -> None:
    alarm = LagAlarm("cam", threshold_s=2.0)
    with caplog.at_level(logging.WARNING, logger="camdet.client.lag"):
        for lag in (0.5, 1.9, 2.1, 3.0, 3.9, 4.2, 9.0, 10.0, 1.0, 1.5):
            alarm.observe(lag)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" is ")[1].split(" s")[0] for line in lines[:3]] == ["2.1", "4.2", "9.0"]
    assert lines[3] == "camera cam caught up: 1.0 s behind live"
    assert len(lines) == 4


def test_accounting_reports_the_latest_lag_of_each_camera() -> None:
    accounting = Accounting(["a", "b"])
    for latency in (0.2, 0.9):
        accounting.captured("a")
        accounting.answered("a", latency)
    snapshot = accounting.snapshot()
    assert snapshot["a"].lag_s == 0.9
    assert snapshot["b"].lag_s is None


# --------------------------------------------------------------------- real RTSP camera


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lag") / "cam25.mp4"
    write_clip(path, 7, 20 * CAMERA_FPS, CLIP_WIDTH, CLIP_HEIGHT, CAMERA_FPS)
    return path


async def _consume(buffer: FrameBuffer, seconds: float) -> list[tuple[CapturedFrame, float]]:
    """Take frames at ``SERVER_FPS`` like a slow server; each with when it was taken."""
    taken = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = await asyncio.wait_for(buffer.get(), left)
        except TimeoutError:
            break
        if frame is None:
            break
        taken.append((frame, time.monotonic()))
        await asyncio.sleep(1.0 / SERVER_FPS)
    return taken


def test_back_pressured_live_camera_shows_its_lag(camera_clip: Path) -> None:
    require_gst_rtsp()

    async def run(url: str) -> list[tuple[CapturedFrame, float]]:
        config = CameraConfig("cam", url)
        buffer = FrameBuffer(2, drop_oldest=False, loop=asyncio.get_running_loop())
        reader = CameraReader(
            config, open_source(config), buffer, Accounting(["cam"]), BackoffPolicy(0.2, 1.0)
        )
        reader.start()
        try:
            return await _consume(buffer, 8.0)
        finally:
            reader.stop()
            buffer.close()
            await asyncio.to_thread(reader.join, 10.0)

    with RtspServer({"/cam": camera_clip}) as rtsp:
        taken = asyncio.run(run(rtsp.url("/cam")))
    assert len(taken) >= 15
    assert all(frame.pts_s is not None for frame, _ in taken[1:])
    last, taken_at = taken[-1]
    # Read time only sees the 2-frame buffer ...
    assert taken_at - last.captured_mono < 2.0
    # ... the stream clock sees the camera running away: 25 fps in, 3 fps out.
    assert last.capture_delay_s > 3.0, [round(f.capture_delay_s, 2) for f, _ in taken]
    assert last.capture_ts == pytest.approx(last.captured_at - last.capture_delay_s)
    delays = [frame.capture_delay_s for frame, _ in taken[len(taken) // 2 :]]
    assert delays == sorted(delays), "the lag of a back-pressured camera only grows"


def test_sessions_count_successful_connections_not_attempts(camera_clip: Path) -> None:
    require_gst_rtsp()

    async def run(rtsp: RtspServer) -> tuple[list[CapturedFrame], int]:
        config = CameraConfig("cam", rtsp.url("/cam"))
        buffer = FrameBuffer(64, drop_oldest=True, loop=asyncio.get_running_loop())
        accounting = Accounting(["cam"])
        reader = CameraReader(
            config, open_source(config), buffer, accounting, BackoffPolicy(0.1, 0.3)
        )
        frames: list[CapturedFrame] = []

        async def collect() -> None:
            while (frame := await buffer.get()) is not None:
                frames.append(frame)

        collector = asyncio.create_task(collect())
        reader.start()
        await asyncio.to_thread(wait_until, lambda: len(frames) >= 5, 20.0, "first frames")
        rtsp.stop()
        # Down for a while: several reconnect attempts fail.
        await asyncio.to_thread(
            wait_until, lambda: accounting.snapshot()["cam"].reconnects >= 3, 20.0, "retries"
        )
        before = len(frames)
        await asyncio.to_thread(rtsp.start)
        await asyncio.to_thread(wait_until, lambda: len(frames) >= before + 5, 30.0, "resume")
        reader.stop()
        buffer.close()
        await collector
        await asyncio.to_thread(reader.join, 10.0)
        return frames, accounting.snapshot()["cam"].reconnects

    with RtspServer({"/cam": camera_clip}) as rtsp:
        frames, attempts = asyncio.run(run(rtsp))
    assert attempts >= 3
    assert sorted({frame.session for frame in frames}) == [0, 1]
